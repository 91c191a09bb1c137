"""moto serving one request at a time, for the concurrency tests.

DynamoDB runs conditional writes and TransactWriteItems serializably; moto's own
server handles requests on threads without that isolation, so two concurrent
conditional writes can both pass their check. The tests that race writers on purpose
(store limit, concurrent updates, duplicate events) use this server so that what they
check is Herald's logic, not moto's thread safety.

    python infra/moto_serial.py 127.0.0.1 5056
"""
import os
import sys

from werkzeug.serving import run_simple

from moto.server import DomainDispatcherApplication, create_backend_app
from moto.moto_server.werkzeug_app import MotoRequestHandler

host, port = sys.argv[1], int(sys.argv[2])
os.environ.setdefault("MOTO_PORT", str(port))
app = DomainDispatcherApplication(create_backend_app)
run_simple(host, port, app, threaded=False, request_handler=MotoRequestHandler)
