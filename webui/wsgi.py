"""The uWSGI entry point: ``module = webui.wsgi:application`` in uwsgi.ini."""

from webui import create_app

# Settings come from the file named by ZUUL_STATUS_CONFIG (set in uwsgi.ini).
application = create_app()
