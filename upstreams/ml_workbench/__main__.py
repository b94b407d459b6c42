"""``python -m upstreams.ml_workbench``: serve on 127.0.0.1:8002."""

import sys

from upstreams.common import serve
from upstreams.ml_workbench.api import router
from upstreams.ml_workbench.service import TITLE, MLWorkbenchSettings

sys.exit(serve(TITLE, MLWorkbenchSettings, [router]))
