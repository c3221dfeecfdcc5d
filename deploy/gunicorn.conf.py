"""gunicorn settings for `gunicorn -c deploy/gunicorn.conf.py 'dni:create_app()'`.

The same defaults `dni serve` uses (dni.serve.gunicorn_defaults); override below or with
GUNICORN_CMD_ARGS. The app is built in each worker after the fork (no preload), so each
worker has its own Redis and database connections. Background work is not theirs: run
`dni worker` beside them (deploy/dni-worker.service).

Metrics: set PROMETHEUS_MULTIPROC_DIR (the systemd unit uses /run/dni/metrics) so that
/metrics on any worker sums all workers; the defaults' `on_starting` hook empties that folder
and `child_exit` calls prometheus_client's `mark_process_dead` for each exited worker.
"""

import os

from dni.serve import gunicorn_defaults

globals().update(gunicorn_defaults())
bind = os.environ.get("DNI_BIND", "127.0.0.1:8000")
