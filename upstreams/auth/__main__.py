"""``python -m upstreams.auth``: serve on 127.0.0.1:8003."""

import sys

from upstreams.auth.service import TITLE, AuthSettings, create_app
from upstreams.common import run
from upstreams.common.service import tracer_provider

sys.exit(run(AuthSettings, lambda settings: create_app(settings, tracer_provider(TITLE, settings))))
