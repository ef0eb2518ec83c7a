"""The services lane's web process: the portal, plus one route that reads app data through
the data plane *in this gunicorn process*.

The portal's own pages never decrypt (a GET changes nothing and calls no AWS API); the vendor's
apps read this way. The route lets a test prove that a revocation reaches a web process's
data-key cache and access guard, not only a Celery worker's.
"""

from byokportal.wsgi import application as portal
from dataplane.records import live_read_check
from orgs.models import AppInstance

READ_PREFIX = "/__services-lane__/read/"


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if not path.startswith(READ_PREFIX):
        return portal(environ, start_response)
    app = AppInstance.objects.get(pk=int(path.removeprefix(READ_PREFIX).strip("/")))
    readable, detail = live_read_check(app)
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    return [f"{'readable' if readable else 'refused'}: {detail}".encode()]
