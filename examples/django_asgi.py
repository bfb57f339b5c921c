"""A Django project's ``asgi.py``: ``/sse/...`` goes to the sub-app, the rest to Django.

Django has no mount and no lifespan: `SSEDispatcher` routes the prefix and answers the
lifespan itself (its shutdown closes the manager). Serve it with
``python -m sse_toolkit run mysite.asgi:application``.
"""

import os

from django.core.asgi import get_asgi_application

from sse_toolkit import SSEApp, sse_manager
from sse_toolkit.contrib.django import SSEDispatcher

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
django_app = get_asgi_application()  # first: it sets Django up

sse = SSEApp(sse_manager, allow_publish=True)  # give it a secret= outside a demo
# --8<-- [start:dispatch]
application = SSEDispatcher(django_app, sse, prefix="/sse")
# --8<-- [end:dispatch]
