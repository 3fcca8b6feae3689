"""The WSGI entry point for gunicorn: ``gatekeeper.wsgi:app``."""

import gc

from gatekeeper.app import create_app

app = create_app()
# Everything built at start-up (modules, the app, templates, the policy) lives as long as the
# worker: moved out of the collector's generations, it is no longer walked by every full
# collection a request triggers.
gc.freeze()
