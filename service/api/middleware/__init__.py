"""The service's middleware: what every request goes through before (or instead of) FastAPI's
routing. One module per layer, run in this order by one ASGI hop (stack.ServiceMiddleware):

- observe.py     metrics and the access log (outermost: sees every reply);
- auth.py        the bearer token (deny by default; routes marked open need none);
- limits.py      body size limits (per route where the route names one);
- idempotency.py Idempotency-Key replies remembered and replayed (the store: replies.py);
- fast_path.py   binary lookups and pushes handed straight to their handlers;
- routes.py      what a route tells the layers about itself (`route_policy`), and the table
                 that resolves a request's route once.

Each reads the request's headers through starlette's `Headers(scope=scope)`, one object per
request made by the stack.
"""
