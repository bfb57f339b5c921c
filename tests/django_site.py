"""A one-view Django project configured in code, for the mount tests.

Django's settings are process-wide and configured once: `asgi_application` does it on
first use, so importing this module (or running other tests) configures nothing.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import path


def hello(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"hello": "from django"})


urlpatterns = [path("hello", hello)]


def asgi_application() -> Any:
    """Django's ASGI handler for this project (settings configured on the first call)."""
    from django.conf import settings
    from django.core.asgi import get_asgi_application

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="tests only, not a secret",
            ALLOWED_HOSTS=["127.0.0.1", "localhost"],
            ROOT_URLCONF=__name__,
            INSTALLED_APPS=[],
            MIDDLEWARE=[],
            USE_TZ=True,
        )
    return get_asgi_application()  # sets Django up
