"""Maps the domain errors (core.errors) to HTTP answers: 404 and 409 pages."""

from django.http import Http404
from django.shortcuts import render

from core.errors import NotAllowed, NotFound


class DomainErrorMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, NotFound):
            raise Http404(str(exception)) from exception
        if isinstance(exception, NotAllowed):
            return render(request, "409.html", {"message": str(exception)}, status=409)
        return None
