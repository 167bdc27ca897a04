"""One router per resource; each route validates, calls the job service, and returns its view."""
