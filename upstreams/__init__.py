"""Reference upstreams: the Analysis Engine and the ML Workbench (HTTP only; never import app/)."""
