"""The HTTP surface: the hot routes as raw ASGI, the rest as one Starlette app, OIP, OpenAPI, and the
one place where errors become responses."""
