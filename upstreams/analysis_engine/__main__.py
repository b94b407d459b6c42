"""``python -m upstreams.analysis_engine``: serve on 127.0.0.1:8001."""

import sys

from upstreams.analysis_engine.api import router
from upstreams.analysis_engine.service import TITLE, AnalysisEngineSettings
from upstreams.common import serve

sys.exit(serve(TITLE, AnalysisEngineSettings, [router]))
