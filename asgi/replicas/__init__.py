"""The app on N replicas with Ray Serve (`lumen serve --num-replicas N`).

Ray's HTTP proxy hands each request to the front deployment (front.py), which reads its body,
keys it by its prompt's prefixes (prefixes.py) and forwards the whole exchange to an engine
replica (engine_replica.py) picked by Ray's request router (prefix_router.py, or Ray's own).
The replica runs the same ASGI app as the single-process server on it, so routes, auth, errors,
request ids and streaming are the same; the ASGI messages it sends stream back through the
front (forwarding.py). launch.py starts it all from the command line; application.py is the
builder `serve run` and `serve deploy` take.
"""
