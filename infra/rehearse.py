"""The deploy rehearsal (`make rehearse`): what `sam deploy` does, as far as can be done
offline, failing on what a deploy would fail on.

1. translates template.yaml to plain CloudFormation with the SAM translator (offline:
   no managed-policy lookup; the template names none);
2. creates that stack in moto's CloudFormation (infra/moto_iam.py on loopback: moto
   with IAM authorization evaluated on every call), the release bootstraps uploaded as
   the functions' code; resource types moto does not model are skipped and listed;
3. runs each function's bootstrap under a Runtime API served here, with the
   environment the stack gave that function (read back from moto's Lambda
   configuration) and the credentials of a session of its own role (sts:AssumeRole on
   moto, as the Lambda service does), so a missing permission is an AccessDenied here;
4. plays API Gateway (HTTP API payload 2.0 events with JWT claims or an IAM identity)
   and the SQS event source mapping (batches from the internal queue with the
   mapping's batch size, polled with the function's role, ReportBatchItemFailures
   honoured, the queue's redrive to the DLQ after maxReceiveCount receives);
5. runs the product tour through it: a webhook (a receiver here), a customer SQS queue
   (on the same moto, static keys of an IAM user allowed sqs:SendMessage on it) and an
   ActiveMQ queue (STOMP over TLS); one order.paid event through ingest; every target
   receives it; the logs and jobs routes show the attempts; a failing webhook ends in
   the DLQ and replay brings it back; a delivered job replayed by id (from the archive)
   arrives as a new job under a new webhook-id; the test route works for each type.

Deliberate differences from a deployed stack, on top of the stack's environment:
AWS_ENDPOINT_URL (moto), HERALD_ALLOW_PRIVATE_CIDRS=127.0.0.1/32 (the receiver and the
broker are on loopback), HERALD_STOMP_EXTRA_CA (the test broker's self-signed
certificate) and HERALD_RETRY_SCALE=0.01 (the retry schedule in seconds, not minutes).

Prints one line per step and `N passed, M failed`; exits 1 on any failure. Loopback
only; everything started here is stopped on the way out.

    .venv/bin/python infra/rehearse.py     (after `make build ARCH=x86_64`)
"""
import base64
import datetime
import hashlib
import io
import json
import os
import queue
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import botocore.config
import botocore.exceptions

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / ".run" / "rehearsal"
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's account
STACK = os.environ.get("REHEARSAL_STACK", "herald-rehearsal")
MOTO_PORT = int(os.environ.get("REHEARSAL_MOTO_PORT", "5355"))
MOTO = f"http://127.0.0.1:{MOTO_PORT}"
LAMBDA_DIR = Path(os.environ.get("REHEARSAL_LAMBDA_DIR", ROOT / "target" / "lambda"))
STORE = "rehearsal-store"
JWT_ISSUER = "https://issuer.rehearsal.invalid/"
JWT_AUDIENCE = "herald-rehearsal"
PARAMETERS = {
    "AuthMode": "JWT",
    "JwtIssuer": JWT_ISSUER,
    "JwtAudience": JWT_AUDIENCE,
    "Architecture": "x86_64",
}
# What the rehearsal adds to each function's environment (see the module doc).
DEVIATIONS = {
    "HERALD_ALLOW_PRIVATE_CIDRS": "127.0.0.1/32",
    "HERALD_RETRY_SCALE": "0.01",
}
# The IAM user that stands for the Lambda service when it assumes the functions'
# roles (infra/moto_iam.py matches it to the Service principal in trust policies).
LAMBDA_SERVICE_USER = "rehearsal-lambda-service"
SETUP_CALLS = 3  # CreateUser, PutUserPolicy, CreateAccessKey without credentials

started = []  # (description, stop function), stopped in reverse order


def stop_all():
    while started:
        _, stop = started.pop()
        try:
            stop()
        except Exception:  # noqa: BLE001 - stopping the rest matters more
            pass


def answers(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def until(what, check, seconds, every=0.2):
    """Polls `check` until it returns a truthy value; raises with `what` after `seconds`."""
    end = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise Failure(f"{what} within {seconds} s")
        time.sleep(every)


class Failure(Exception):
    pass


class Steps:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def run(self, name, fn, fatal=False):
        """Runs one step: `fn` returns an optional detail or raises Failure (or anything)."""
        try:
            detail = fn()
        except Failure as e:
            return self._fail(name, str(e), fatal)
        except botocore.exceptions.ClientError as e:
            return self._fail(name, f"{e.response['Error'].get('Code')}: {e.response['Error'].get('Message')}", fatal)
        except Exception as e:  # noqa: BLE001 - any error is this step's failure
            return self._fail(name, f"{type(e).__name__}: {e}", fatal)
        self.passed += 1
        print(f"ok   {name}{': ' + detail if detail else ''}", flush=True)
        return True

    def _fail(self, name, why, fatal):
        self.failed += 1
        print(f"FAIL {name}: {why}", flush=True)
        if fatal:
            raise Abort()
        return False


class Abort(Exception):
    pass


# ---------------------------------------------------------------------------- moto


def session(key, secret, token=None):
    return boto3.session.Session(
        aws_access_key_id=key, aws_secret_access_key=secret, aws_session_token=token, region_name=REGION
    )


CLIENT_CONFIG = botocore.config.Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=60)


def client(sess, service):
    return sess.client(service, endpoint_url=MOTO, config=CLIENT_CONFIG)


def start_moto():
    if answers(MOTO_PORT):
        raise Failure(f"127.0.0.1:{MOTO_PORT} is taken; set REHEARSAL_MOTO_PORT")
    log = open(RUN / "moto.log", "wb")
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(SETUP_CALLS), MOTO_PORT=str(MOTO_PORT))
    env["REHEARSAL_SERVICE_USERS"] = f"{LAMBDA_SERVICE_USER}=lambda.amazonaws.com"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "infra" / "moto_iam.py"), "127.0.0.1", str(MOTO_PORT)],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    started.append(("moto", lambda: (proc.terminate(), proc.wait(10))))
    until("moto answering", lambda: answers(MOTO_PORT) or (proc.poll() is not None and _raise(f"moto exited; see {RUN / 'moto.log'}")), 30)
    return f"127.0.0.1:{MOTO_PORT}, IAM enforced after {SETUP_CALLS} setup calls"


def _raise(why):
    raise Failure(why)


def create_admin():
    """The setup allowance: an admin user whose key creates everything else."""
    anonymous = session("setup", "setup")
    iam = client(anonymous, "iam")
    iam.create_user(UserName="rehearsal-admin")
    iam.put_user_policy(
        UserName="rehearsal-admin", PolicyName="admin",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}),
    )
    key = iam.create_access_key(UserName="rehearsal-admin")["AccessKey"]
    return session(key["AccessKeyId"], key["SecretAccessKey"])


def refused(call):
    """Whether `call` was refused as AccessDenied (moto answers in its XML form, which
    a JSON-protocol client reads as a bare 403)."""
    try:
        call()
    except botocore.exceptions.ClientError as e:
        error = e.response.get("Error", {})
        if error.get("Code") in ("AccessDenied", "AccessDeniedException") or (
            error.get("Code") == "403" and "AccessDenied" in str(error.get("Message"))
        ):
            return True
        raise
    return False


def moto_log_denials(offset=0):
    text = (RUN / "moto.log").read_bytes()[offset:].decode("utf-8", "replace")
    return [line for line in text.splitlines() if "AccessDenied:" in line]


# ---------------------------------------------------------------------------- template


def load_sam_template():
    from samcli.yamlhelper import yaml_parse

    return yaml_parse((ROOT / "template.yaml").read_text())


def functions_of(sam):
    """{logical id: bootstrap binary name} of every AWS::Serverless::Function."""
    out = {}
    for logical, resource in sam["Resources"].items():
        if resource.get("Type") == "AWS::Serverless::Function":
            binary = resource.get("Metadata", {}).get("BuildProperties", {}).get("Binary")
            if not binary:
                raise Failure(f"{logical} names no Metadata.BuildProperties.Binary")
            out[logical] = binary
    return out


def translate(sam, bucket):
    """Plain CloudFormation, each function's code at s3://bucket/<logical id>.zip."""
    from samtranslator.translator.transform import transform

    class NoManagedPolicies:
        # The template's policies are inline statements; a managed-policy name would
        # need IAM's list of AWS policies (a call to AWS), which this refuses to make.
        def load(self):
            return {}

    sam = json.loads(json.dumps(sam))
    for logical in functions_of(sam):
        sam["Resources"][logical]["Properties"]["CodeUri"] = f"s3://{bucket}/{logical}.zip"
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    return transform(sam, PARAMETERS, NoManagedPolicies())


def moto_cfn_types():
    from moto.cloudformation.parsing import NULL_MODELS, get_model_map

    return set(get_model_map()) | set(NULL_MODELS)


# ---------------------------------------------------------------------------- Runtime API


class RuntimeApi(ThreadingHTTPServer):
    """The Lambda Runtime API for one function instance: hands out one event per
    `next`, collects its response or error, and an init error.
    https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html"""

    daemon_threads = True

    def __init__(self, function_arn):
        super().__init__(("127.0.0.1", 0), RuntimeHandler)
        self.function_arn = function_arn
        self.pending = queue.Queue()
        self.results = {}
        self.changed = threading.Condition()
        self.init_error = None
        self.polled = threading.Event()
        self.closing = False

    def address(self):
        return f"127.0.0.1:{self.server_address[1]}"

    def deliver(self, request_id, kind, body):
        with self.changed:
            self.results[request_id] = (kind, body)
            self.changed.notify_all()


class RuntimeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_):
        pass

    def _answer(self, status, body=b"", headers=None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path != "/2018-06-01/runtime/invocation/next":
            return self._answer(404)
        server = self.server
        server.polled.set()
        while True:
            try:
                request_id, event, deadline_ms = server.pending.get(timeout=0.5)
                break
            except queue.Empty:
                if server.closing:
                    # The instance is being stopped: its bootstrap is gone with it.
                    self.close_connection = True
                    return
        self._answer(200, event, {
            "Content-Type": "application/json",
            "Lambda-Runtime-Aws-Request-Id": request_id,
            "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": server.function_arn,
            "Lambda-Runtime-Trace-Id": f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Parent={uuid.uuid4().hex[:16]};Sampled=0",
        })

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = self.path.strip("/").split("/")
        if parts[:3] == ["2018-06-01", "runtime", "init"] and parts[3:] == ["error"]:
            self.server.init_error = body.decode("utf-8", "replace")
        elif parts[:3] == ["2018-06-01", "runtime", "invocation"] and len(parts) == 5 and parts[4] in ("response", "error"):
            self.server.deliver(parts[3], parts[4], body)
        else:
            return self._answer(404)
        self._answer(202, b'{"status":"OK"}', {"Content-Type": "application/json"})


class Function:
    """One instance of a deployed function: its bootstrap under a Runtime API."""

    def __init__(self, logical, binary, config, credentials, extra_env):
        self.logical = logical
        self.name = config["FunctionName"]
        self.arn = config["FunctionArn"]
        self.timeout = int(config.get("Timeout", 3))
        self.config = config
        self.binary = binary
        self.credentials = credentials
        self.extra_env = extra_env
        self.runtime = None
        self.proc = None
        self.lock = threading.Lock()
        self.errors = 0
        self.invocations = 0

    def environment(self):
        """What Lambda gives a provided.al2023 function: the configured variables,
        the reserved ones, the role session's credentials; then the rehearsal's
        additions. https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html"""
        logging = self.config.get("LoggingConfig") or {}
        # Lambda's variables are strings (moto keeps a Number parameter's value as one).
        env = {k: str(v) for k, v in self.config.get("Environment", {}).get("Variables", {}).items()}
        env.update({
            "AWS_LAMBDA_RUNTIME_API": self.runtime.address(),
            "AWS_LAMBDA_FUNCTION_NAME": self.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.config.get("MemorySize", 128)),
            "AWS_LAMBDA_LOG_GROUP_NAME": logging.get("LogGroup", f"/aws/lambda/{self.name}"),
            "AWS_LAMBDA_LOG_STREAM_NAME": f"{datetime.date.today():%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EXECUTION_ENV": "AWS_Lambda_rapid",
            "_HANDLER": self.config.get("Handler", "bootstrap"),
            "LAMBDA_TASK_ROOT": str(self.binary.parent),
            "LAMBDA_RUNTIME_DIR": "/var/runtime",
            "TZ": ":UTC",
            "LANG": "en_US.UTF-8",
            "PATH": "/usr/local/bin:/usr/bin/:/bin:/opt/bin",
            "AWS_ACCESS_KEY_ID": self.credentials["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": self.credentials["SecretAccessKey"],
            "AWS_SESSION_TOKEN": self.credentials["SessionToken"],
        })
        if logging.get("LogFormat") == "JSON":
            env["AWS_LAMBDA_LOG_FORMAT"] = "JSON"
            if logging.get("ApplicationLogLevel"):
                env["AWS_LAMBDA_LOG_LEVEL"] = logging["ApplicationLogLevel"]
        env.update(self.extra_env)
        return env

    def start(self):
        self.runtime = RuntimeApi(self.arn)
        threading.Thread(target=self.runtime.serve_forever, daemon=True).start()
        log = open(RUN / f"{self.logical}.log", "wb")
        self.proc = subprocess.Popen(
            [str(self.binary)], env=self.environment(), cwd=str(self.binary.parent),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        started.append((self.logical, self.stop))

        def ready():
            if self.runtime.init_error:
                raise Failure(f"init error: {self.runtime.init_error[:300]}")
            if self.proc.poll() is not None:
                raise Failure(f"the bootstrap exited with {self.proc.returncode}; see {RUN / (self.logical + '.log')}")
            return self.runtime.polled.is_set()

        until(f"{self.logical} polling for its first event", ready, 30, 0.05)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.runtime:
            self.runtime.closing = True
            self.runtime.shutdown()

    def invoke(self, event):
        """Invokes synchronously: ('response'|'error'|'timeout', parsed body)."""
        with self.lock:
            self.invocations += 1
            request_id = str(uuid.uuid4())
            deadline = time.time() + self.timeout
            self.runtime.pending.put((request_id, json.dumps(event).encode(), int(deadline * 1000)))
            with self.runtime.changed:
                while request_id not in self.runtime.results:
                    left = deadline - time.time()
                    if left <= 0 or self.proc.poll() is not None:
                        self.errors += 1
                        why = "timeout" if self.proc.poll() is None else "exited"
                        return why, None
                    self.runtime.changed.wait(min(left, 0.5))
                kind, body = self.runtime.results.pop(request_id)
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = body.decode("utf-8", "replace")
            if kind == "error":
                self.errors += 1
            return kind, parsed


# ---------------------------------------------------------------------------- API Gateway


class ApiGateway:
    """The HTTP API as the stack declares it: POST /v2/events to ingest (AWS_IAM), every
    other /v2/{proxy+} to api (JWT authorizer, claims passed through), payload 2.0.
    API Gateway's own authorizers are not rehearsed: the claims and the IAM identity
    are what they would pass on. https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-develop-integrations-lambda.html"""

    API_ID = "rehearsal1"

    def __init__(self, api, ingest, store_claim):
        self.api = api
        self.ingest = ingest
        self.store_claim = store_claim
        self.headers = {}  # of the last answer
        self.caller_arn = f"arn:aws:sts::{ACCOUNT}:assumed-role/commerce-backend/commerce"

    def call(self, method, path, body=None, query=None, store=STORE):
        domain = f"{self.API_ID}.execute-api.{REGION}.amazonaws.com"
        now = datetime.datetime.now(datetime.timezone.utc)
        headers = {
            "host": domain,
            "x-forwarded-proto": "https",
            "x-forwarded-port": "443",
            "x-forwarded-for": "203.0.113.10",
            "user-agent": "herald-rehearsal/1.0",
            "accept": "application/json",
        }
        if body is not None:
            headers["content-type"] = "application/json"
        context = {
            "accountId": ACCOUNT,
            "apiId": self.API_ID,
            "domainName": domain,
            "domainPrefix": self.API_ID,
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.10", "userAgent": headers["user-agent"]},
            "requestId": base64.b64encode(uuid.uuid4().bytes[:10]).decode(),
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        }
        event = {
            "version": "2.0",
            "rawPath": path,
            "rawQueryString": urllib.parse.urlencode(query or {}),
            "headers": headers,
            "requestContext": context,
            "isBase64Encoded": False,
        }
        if query:
            event["queryStringParameters"] = dict(query)
        if body is not None:
            event["body"] = json.dumps(body)
        if method == "POST" and path == "/v2/events":
            function = self.ingest
            route = "POST /v2/events"
            headers["x-store-id"] = store
            context["authorizer"] = {"iam": {
                "accountId": ACCOUNT, "callerId": "AROAREHEARSAL:commerce", "principalOrgId": None,
                "userArn": self.caller_arn, "userId": "AROAREHEARSAL:commerce", "cognitoIdentity": None,
            }}
        elif method == "GET" and path.startswith("/v2/event-data/"):
            # Its own route, with no authorizer: the token is the capability.
            function = self.api
            route = "GET /v2/event-data/{token}"
            event["pathParameters"] = {"token": path[len("/v2/event-data/"):]}
        elif path.startswith("/v2/"):
            function = self.api
            route = "ANY /v2/{proxy+}"
            event["pathParameters"] = {"proxy": path[len("/v2/"):]}
            headers["authorization"] = "Bearer rehearsal-token"
            issued = int(now.timestamp())
            context["authorizer"] = {"jwt": {"claims": {
                "iss": JWT_ISSUER, "aud": JWT_AUDIENCE, "sub": "rehearsal-owner",
                "iat": str(issued), "exp": str(issued + 3600), self.store_claim: store,
            }, "scopes": None}}
        else:
            return 404, {"message": "Not Found"}
        event["routeKey"] = route
        context["routeKey"] = route
        kind, answer = function.invoke(event)
        if kind != "response":
            # API Gateway answers a failed or timed-out integration itself.
            return (503 if kind == "timeout" else 500), {"message": "Internal Server Error", "function": kind, "detail": answer}
        if not isinstance(answer, dict) or "statusCode" not in answer:
            return 200, answer
        self.headers = {k.lower(): v for k, v in (answer.get("headers") or {}).items()}
        text = answer.get("body") or ""
        if answer.get("isBase64Encoded"):
            text = base64.b64decode(text).decode("utf-8", "replace")
        try:
            return int(answer["statusCode"]), json.loads(text) if text else None
        except ValueError:
            return int(answer["statusCode"]), text


# ---------------------------------------------------------------------------- SQS event source


class EventSourceMapping(threading.Thread):
    """Lambda's SQS poller for one mapping: receives up to BatchSize records with the
    function's role, invokes the function, deletes what succeeded (with
    ReportBatchItemFailures, every record not named in batchItemFailures; a function
    error or an unknown identifier fails the whole batch) and leaves the rest to
    become visible again, where the queue's redrive policy takes over.
    https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html"""

    def __init__(self, mapping, function, sqs, queue_url):
        super().__init__(daemon=True)
        self.function = function
        self.sqs = sqs
        self.queue_url = queue_url
        self.source_arn = mapping["EventSourceArn"]
        self.batch_size = int(mapping.get("BatchSize", 10))
        self.window = int(mapping.get("MaximumBatchingWindowInSeconds", 0) or 0)
        self.report_failures = "ReportBatchItemFailures" in (mapping.get("FunctionResponseTypes") or [])
        self.stopping = threading.Event()
        self.batches = 0
        self.errors = []

    def stop(self):
        self.stopping.set()
        self.join(10)

    def receive(self):
        messages = []
        end = time.monotonic() + self.window
        while len(messages) < self.batch_size and not self.stopping.is_set():
            out = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(10, self.batch_size - len(messages)),
                WaitTimeSeconds=1 if not messages else 0,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            got = out.get("Messages", [])
            messages += got
            if not got or time.monotonic() >= end:
                break
        return messages

    def record(self, m):
        attributes = {k: v for k, v in m.get("Attributes", {}).items()}
        message_attributes = {}
        for k, v in (m.get("MessageAttributes") or {}).items():
            message_attributes[k] = {
                "stringValue": v.get("StringValue"), "binaryValue": v.get("BinaryValue"),
                "stringListValues": [], "binaryListValues": [], "dataType": v["DataType"],
            }
        return {
            "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
            "attributes": attributes, "messageAttributes": message_attributes,
            "md5OfBody": m.get("MD5OfBody", ""), "eventSource": "aws:sqs",
            "eventSourceARN": self.source_arn, "awsRegion": REGION,
        }

    def run(self):
        while not self.stopping.is_set():
            try:
                messages = self.receive()
                if messages:
                    self.deliver(messages)
            except Exception as e:  # noqa: BLE001 - a poller keeps polling, and says why
                self.errors.append(f"{type(e).__name__}: {e}")
                time.sleep(1)

    def deliver(self, messages):
        self.batches += 1
        kind, answer = self.function.invoke({"Records": [self.record(m) for m in messages]})
        if kind != "response":
            self.errors.append(f"the function's invocation ended with {kind}: {str(answer)[:300]}")
            return
        ids = {m["MessageId"] for m in messages}
        failed = set()
        if self.report_failures and isinstance(answer, dict):
            for item in answer.get("batchItemFailures") or []:
                identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
                if identifier not in ids:
                    self.errors.append(f"batchItemFailures names {identifier!r}, not a record of the batch: the whole batch fails")
                    return
                failed.add(identifier)
        done = [m for m in messages if m["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            chunk = done[start:start + 10]
            out = self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
            for f in out.get("Failed", []):
                self.errors.append(f"delete failed: {f}")


# ---------------------------------------------------------------------------- peers


def receiver_certificate(ca_path, cert_path, key_path):
    """A CA of the rehearsal's own and, signed by it, the receiver's certificate for
    127.0.0.1 (webpki refuses a CA certificate as a server's)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    import ipaddress

    now = datetime.datetime.now(datetime.timezone.utc)

    def build(subject, issuer, public_key, signing_key, ca):
        builder = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
            ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        return builder.sign(signing_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Herald rehearsal CA")])
    ca = build(ca_name, ca_name, ca_key.public_key(), ca_key, True)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    leaf = build(leaf_name, ca_name, key.public_key(), ca_key, False)
    Path(ca_path).write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    Path(cert_path).write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    Path(key_path).write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


class Receiver(ThreadingHTTPServer):
    """The webhook receiver, over HTTPS (the stack refuses plain http webhooks) with a
    certificate of its own: /hook answers 200; /flaky 503 until `flaky_ok` is set."""

    daemon_threads = True

    def __init__(self, cert, key):
        super().__init__(("127.0.0.1", 0), ReceiverHandler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.seen = {"/hook": [], "/flaky": []}
        self.flaky_refused = 0
        self.flaky_ok = False
        self.lock = threading.Lock()

    def url(self, path):
        return f"https://127.0.0.1:{self.server_address[1]}{path}"


class ReceiverHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        server = self.server
        path = self.path.split("?")[0]
        with server.lock:
            if path == "/flaky" and not server.flaky_ok:
                server.flaky_refused += 1
                status = 503
            elif path in server.seen:
                try:
                    parsed = json.loads(body)
                except ValueError:
                    parsed = None
                server.seen[path].append((dict(self.headers), parsed))
                status = 200
            else:
                status = 404
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


def stomp_receive(password, destination, seconds):
    """One MESSAGE from the broker over plain STOMP on loopback (the reading side)."""
    with socket.create_connection(("127.0.0.1", 61613), timeout=seconds) as s:
        def send(command, headers):
            frame = command + "\n" + "".join(f"{k}:{v}\n" for k, v in headers.items()) + "\n\0"
            s.sendall(frame.encode())

        buffer = b""

        def frame():
            nonlocal buffer
            while b"\0" not in buffer:
                chunk = s.recv(65536)
                if not chunk:
                    raise Failure("the broker closed the connection")
                buffer += chunk
            raw, buffer = buffer.split(b"\0", 1)
            raw = raw.lstrip(b"\r\n")
            head, _, body = raw.partition(b"\n\n")
            lines = head.decode().split("\n")
            return lines[0], dict(line.split(":", 1) for line in lines[1:] if ":" in line), body

        send("CONNECT", {"accept-version": "1.2", "host": "localhost", "login": "herald", "passcode": password, "heart-beat": "0,0"})
        command, headers, _ = frame()
        if command != "CONNECTED":
            raise Failure(f"the broker answered {command}: {headers.get('message')}")
        send("SUBSCRIBE", {"id": "0", "destination": destination, "ack": "auto"})
        command, headers, body = frame()
        if command != "MESSAGE":
            raise Failure(f"the broker sent {command}: {headers.get('message')}")
        send("DISCONNECT", {})
        return headers, json.loads(body)


# ---------------------------------------------------------------------------- the rehearsal


class Rehearsal:
    def __init__(self):
        self.steps = Steps()
        self.admin = None
        self.sam = None
        self.cfn = None
        self.skipped = []
        self.outputs = {}
        self.resources = {}
        self.functions = {}
        self.sessions = {}
        self.esm = None
        self.gateway = None
        self.receiver = None
        self.broker_password = None
        self.ids = {}
        self.customer_queue = None
        self.suffix = uuid.uuid4().hex[:8]
        self.event_id = f"evt-rehearsal-{self.suffix}"
        self.destination = f"/queue/herald.rehearsal.{self.suffix}"

    # -- 1. build and translate
    def bootstraps(self):
        missing = [b for b in functions_of(self.sam).values() if not (LAMBDA_DIR / b / "bootstrap").is_file()]
        if missing:
            raise Failure(f"no {', '.join(str(LAMBDA_DIR / b / 'bootstrap') for b in missing)}: run `make build ARCH=x86_64`")
        return ", ".join(f"{b} {(LAMBDA_DIR / b / 'bootstrap').stat().st_size // 1024} KiB" for b in functions_of(self.sam).values())

    def translate(self):
        self.cfn = translate(self.sam, "herald-rehearsal-artifacts")
        types = sorted({r["Type"] for r in self.cfn["Resources"].values()})
        supported = moto_cfn_types()
        self.skipped = sorted(t for t in types if t not in supported)
        (RUN / "template.json").write_text(json.dumps(self.cfn, indent=1))
        return f"{len(self.cfn['Resources'])} resources of {len(types)} types"

    # -- 2. the stack
    def create_stack(self):
        s3 = client(self.admin, "s3")
        s3.create_bucket(Bucket="herald-rehearsal-artifacts")
        for logical, binary in functions_of(self.sam).items():
            data = io.BytesIO()
            with zipfile.ZipFile(data, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
                info = zipfile.ZipInfo("bootstrap")
                info.external_attr = 0o755 << 16
                z.writestr(info, (LAMBDA_DIR / binary / "bootstrap").read_bytes())
            s3.put_object(Bucket="herald-rehearsal-artifacts", Key=f"{logical}.zip", Body=data.getvalue())
        cf = client(self.admin, "cloudformation")
        cf.create_stack(
            StackName=STACK, TemplateBody=json.dumps(self.cfn),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in PARAMETERS.items()],
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
        )
        stack = until("CREATE_COMPLETE", lambda: (lambda s: s if s["StackStatus"].endswith("COMPLETE") or s["StackStatus"].endswith("FAILED") else None)(
            cf.describe_stacks(StackName=STACK)["Stacks"][0]), 60)
        if stack["StackStatus"] != "CREATE_COMPLETE":
            raise Failure(f"{stack['StackStatus']}: {stack.get('StackStatusReason')}")
        self.outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        summaries = cf.list_stack_resources(StackName=STACK)["StackResourceSummaries"]
        self.resources = {r["LogicalResourceId"]: r for r in summaries if r.get("LogicalResourceId")}
        created = [k for k, r in self.cfn["Resources"].items() if r["Type"] not in self.skipped]
        missing = [k for k in created if k not in self.resources]
        if missing:
            raise Failure(f"moto models these types but created no {', '.join(missing)}")
        return f"{len(created)} resources created; moto skipped {len(self.cfn['Resources']) - len(created)} ({', '.join(self.skipped) or 'none'})"

    def resource_types_created(self):
        """Each modelled resource is there, in the service that owns it."""
        found = []
        for logical, r in self.resources.items():
            rtype, physical = r["ResourceType"], r["PhysicalResourceId"]
            if rtype == "AWS::DynamoDB::Table":
                table = client(self.admin, "dynamodb").describe_table(TableName=physical)["Table"]
                indexes = sorted(i["IndexName"] for i in table.get("GlobalSecondaryIndexes", []))
                found.append(f"table with {'/'.join(indexes)}")
            elif rtype == "AWS::SQS::Queue":
                attrs = client(self.admin, "sqs").get_queue_attributes(QueueUrl=physical, AttributeNames=["All"])["Attributes"]
                if "RedrivePolicy" in attrs:
                    found.append(f"{logical} (redrive after {json.loads(attrs['RedrivePolicy'])['maxReceiveCount']})")
            elif rtype == "AWS::KMS::Alias":
                aliases = client(self.admin, "kms").list_aliases()["Aliases"]
                if not any(a["AliasName"] == physical and a.get("TargetKeyId") for a in aliases):
                    raise Failure(f"alias {physical} points at no key")
            elif rtype == "AWS::Logs::LogGroup":
                groups = client(self.admin, "logs").describe_log_groups(logGroupNamePrefix=physical)["logGroups"]
                if not groups:
                    raise Failure(f"no log group {physical}")
        return "; ".join(found)

    # -- 3. the functions
    def assume_function_roles(self):
        """Each function's role, assumed as the Lambda service does (the trust policy
        must name lambda.amazonaws.com)."""
        iam = client(self.admin, "iam")
        iam.create_user(UserName=LAMBDA_SERVICE_USER)
        iam.put_user_policy(UserName=LAMBDA_SERVICE_USER, PolicyName="assume-function-roles", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}]}))
        key = iam.create_access_key(UserName=LAMBDA_SERVICE_USER)["AccessKey"]
        service = session(key["AccessKeyId"], key["SecretAccessKey"])
        sts = client(service, "sts")
        lam = client(self.admin, "lambda")
        for logical in functions_of(self.sam):
            physical = self.resources[logical]["PhysicalResourceId"]
            config = lam.get_function_configuration(FunctionName=physical)
            if "LoggingConfig" not in config:
                # moto does not keep a function's LoggingConfig: the template's, resolved.
                declared = self.cfn["Resources"][logical]["Properties"].get("LoggingConfig")
                if declared:
                    config["LoggingConfig"] = {k: self.resolve(v) for k, v in declared.items()}
            creds = sts.assume_role(RoleArn=config["Role"], RoleSessionName=physical[:64])["Credentials"]
            self.sessions[logical] = (config, creds)
        return ", ".join(f"{k}: {v[0]['Role'].split('/')[-1]}" for k, v in self.sessions.items())

    def resolve(self, value):
        """A value of the template as the stack resolved it: a Ref to a parameter or a
        resource, and the condition functions (Fn::If over the template's Conditions,
        Fn::Equals, Fn::And, Fn::Or, Fn::Not)."""
        if not isinstance(value, dict) or len(value) != 1:
            return value
        (fn, arg), = value.items()
        if fn == "Ref":
            if arg in PARAMETERS:
                return PARAMETERS[arg]
            if arg in self.resources:
                return self.resources[arg]["PhysicalResourceId"]
            return str(self.sam.get("Parameters", {}).get(arg, {}).get("Default", ""))
        if fn == "Fn::If":
            name, yes, no = arg
            return self.resolve(yes if self.condition(name) else no)
        if fn in ("Fn::Equals", "Fn::And", "Fn::Or", "Fn::Not", "Condition"):
            return self.truth(value)
        return value

    def condition(self, name):
        """Whether the template's condition `name` holds for the rehearsal's parameters."""
        return self.truth(self.cfn.get("Conditions", {})[name])

    def truth(self, value):
        (fn, arg), = value.items()
        if fn == "Condition":
            return self.condition(arg)
        if fn == "Fn::Equals":
            left, right = (str(self.resolve(v)) for v in arg)
            return left == right
        if fn == "Fn::And":
            return all(self.truth(v) for v in arg)
        if fn == "Fn::Or":
            return any(self.truth(v) for v in arg)
        if fn == "Fn::Not":
            return not self.truth(arg[0])
        raise Failure(f"a condition the rehearsal cannot evaluate: {value}")

    def iam_is_enforced(self):
        """A deliberate probe: ingest's role may not use the secrets key, the api's may
        only with the encryption context its policy requires."""
        key = self.outputs["SecretsKeyArn"]

        def kms(logical):
            _, c = self.sessions[logical]
            return client(session(c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]), "kms")

        context = {"herald:store": STORE, "herald:integration": "probe"}
        if not refused(lambda: kms("IngestFunction").generate_data_key(KeyId=key, KeySpec="AES_256", EncryptionContext=context)):
            raise Failure("ingest's role was allowed kms:GenerateDataKey")
        kms("ApiFunction").generate_data_key(KeyId=key, KeySpec="AES_256", EncryptionContext=context)
        if not refused(lambda: kms("ApiFunction").generate_data_key(KeyId=key, KeySpec="AES_256")):
            raise Failure("the api's role was allowed kms:GenerateDataKey without the encryption context")
        return "ingest refused kms:GenerateDataKey; api allowed it with the encryption context, refused without"

    def start_functions(self):
        ca = self.broker_dir() / "broker-ca.pem"
        extra = dict(DEVIATIONS, AWS_ENDPOINT_URL=MOTO, HERALD_STOMP_EXTRA_CA=str(ca),
                     HERALD_WEBHOOK_EXTRA_CA=str(RUN / "receiver-ca.pem"))
        binaries = functions_of(self.sam)
        for logical, (config, creds) in self.sessions.items():
            binary = (LAMBDA_DIR / binaries[logical] / "bootstrap").resolve()
            function = Function(logical, binary, config, creds, extra)
            function.start()
            self.functions[logical] = function
        return ", ".join(f"{f.logical} ({len(f.config.get('Environment', {}).get('Variables', {}))} variables from the stack)" for f in self.functions.values())

    def start_event_source(self):
        lam = client(self.admin, "lambda")
        fanout = self.functions["FanoutFunction"]
        mappings = [m for m in lam.list_event_source_mappings()["EventSourceMappings"] if m["FunctionArn"] == fanout.arn]
        if len(mappings) != 1:
            raise Failure(f"{len(mappings)} event source mappings for the fan-out, not 1")
        mapping = mappings[0]
        # moto would invoke the function itself (in Docker) on each send: the
        # rehearsal plays the mapping instead, as configured.
        lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)
        queue_url = self.resources["InternalQueue"]["PhysicalResourceId"]
        _, creds = self.sessions["FanoutFunction"]
        sqs = client(session(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]), "sqs")
        self.esm = EventSourceMapping(mapping, fanout, sqs, queue_url)
        if not self.esm.report_failures:
            raise Failure("the mapping does not report batch item failures")
        self.esm.start()
        started.append(("event source mapping", self.esm.stop))
        return f"batch size {self.esm.batch_size}, window {self.esm.window} s, ReportBatchItemFailures, polled with the fan-out's role"

    # -- 5. the tour
    def broker_dir(self):
        return ROOT / ".run" / "activemq"

    def peers(self):
        receiver_certificate(RUN / "receiver-ca.pem", RUN / "receiver-cert.pem", RUN / "receiver-key.pem")
        self.receiver = Receiver(str(RUN / "receiver-cert.pem"), str(RUN / "receiver-key.pem"))
        threading.Thread(target=self.receiver.serve_forever, daemon=True).start()
        started.append(("receiver", self.receiver.shutdown))
        self.broker_password = (self.broker_dir() / "password").read_text().strip()
        sqs = client(self.admin, "sqs")
        name = f"customer-orders-{self.suffix}"
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        iam = client(self.admin, "iam")
        iam.create_user(UserName="customer-sender")
        iam.put_user_policy(UserName="customer-sender", PolicyName="send", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": arn}]}))
        key = iam.create_access_key(UserName="customer-sender")["AccessKey"]
        self.customer_queue = (url, name, key)
        return f"webhook receiver {self.receiver.url('/')}, customer queue {name}, ActiveMQ 127.0.0.1:61614 (TLS)"

    def create(self, kind, name, configuration):
        status, doc = self.gateway.call("POST", "/v2/integrations", {"data": {
            "type": "integration", "integration_type": kind, "name": name, "enabled": True,
            "observes": ["order.paid"], "configuration": configuration}})
        if status != 201:
            raise Failure(f"POST /v2/integrations answered {status}: {json.dumps(doc)[:400]}")
        self.ids[name] = doc["data"]["id"]
        return doc["data"]["id"]

    def create_integrations(self):
        url, name, key = self.customer_queue
        self.create("webhook", "webhook", {"url": self.receiver.url("/hook"), "secret_key": "whsec_" + uuid.uuid4().hex})
        self.create("aws_sqs", "aws_sqs", {
            "url": f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{name}", "region": REGION,
            "aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]})
        self.create("stomp", "stomp", {
            "addresses": ["stomp+ssl://127.0.0.1:61614"], "destination": self.destination,
            "username": "herald", "password": self.broker_password})
        self.create("webhook", "failing webhook", {"url": self.receiver.url("/flaky"), "secret_key": "whsec_" + uuid.uuid4().hex})
        status, doc = self.gateway.call("GET", "/v2/integrations")
        listed = sorted(i["attributes"]["name"] if "attributes" in i else i.get("name") for i in doc.get("data", [])) if status == 200 else []
        if status != 200 or listed != sorted(n for n, i in self.ids.items() if i):
            raise Failure(f"GET /v2/integrations answered {status} with {listed}")
        return "webhook, aws_sqs, stomp and a failing webhook (201 each; listed)"

    def post_event(self):
        status, doc = self.gateway.call("POST", "/v2/events", {"data": {
            "id": self.event_id, "type": "order.paid",
            "payload": {"data": {"id": "order-1001", "type": "order", "status": "paid", "total": 4200}}}})
        if status != 202:
            raise Failure(f"POST /v2/events answered {status}: {json.dumps(doc)[:400]}")
        return f"202 for {self.event_id}"

    def large_event(self):
        """An order too large for a queue message: ingest stores its payload in the
        stack's EventBucket (s3:PutObject on its role), the fan-out reads it back
        (s3:GetObject on its role) and the webhook gets it whole; its data alone is
        too large for an SQS message, so the customer queue gets a dataref (its code
        made with DatarefKey under the fan-out's role), which the api checks (VerifyMac
        under its role) and redirects to a GET it presigned (s3:GetObject on its
        role) that serves exactly the data."""
        event_id = self.event_id + "-large"
        lines = [{"id": f"line-{n}", "type": "order_line", "sku": "x" * 980} for n in range(300)]
        items = [{"id": f"item-{n}", "type": "order_item", "sku": "x" * 980} for n in range(50)]
        data = {"id": "order-1002", "type": "order", "status": "paid", "lines": lines}
        payload = {"data": data, "included": {"items": items}}
        status, doc = self.gateway.call("POST", "/v2/events", {"data": {
            "id": event_id, "type": "order.paid", "payload": payload}})
        if status != 202:
            raise Failure(f"POST /v2/events answered {status}: {json.dumps(doc)[:400]}")

        def arrived():
            return [b for _, b in self.receiver.seen["/hook"] if b and json.dumps(b).find(event_id) >= 0]

        body = until("the webhook receiving the large event", arrived, 60)[0]
        if body.get("payload") != payload:
            raise Failure("the webhook got the large event without its whole payload")
        bucket = self.resolve({"Ref": "EventBucket"})
        objects = client(self.admin, "s3").list_objects_v2(Bucket=bucket, Prefix="events/").get("Contents", [])
        if not objects:
            raise Failure(f"nothing was stored under events/ in {bucket}")
        size = len(json.dumps(payload))

        url, _, _ = self.customer_queue
        sqs = client(self.admin, "sqs")

        def queued():
            for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", []):
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
                if event_id in m["Body"]:
                    return json.loads(m["Body"])
            return None

        message = until("the customer queue receiving the large event", queued, 60, 0)
        dataref = message.get("dataref", "")
        if "data" in message or ".execute-api." not in dataref or "/v2/event-data/" not in dataref:
            raise Failure(f"the queue message carries no dataref of the api: {json.dumps(message)[:300]}")
        path = "/" + dataref.split("://", 1)[1].split("/", 1)[1]
        status, _ = self.gateway.call("GET", path)
        location = self.gateway.headers.get("location", "")
        if status != 307 or not location:
            raise Failure(f"GET {path[:40]}... answered {status}, not a redirect")
        with urllib.request.urlopen(location, timeout=30) as r:
            fetched = r.read()
        if hashlib.sha256(fetched).hexdigest() != message.get("datasha256") or json.loads(fetched) != data:
            raise Failure("the dataref's redirect served other bytes than the order's data")
        edited = path[:-1] + ("A" if path[-1] != "A" else "B")
        status, _ = self.gateway.call("GET", edited)
        if status != 404:
            raise Failure(f"a token changed in its last character answered {status}, not 404")
        return (f"{size // 1024} KiB payload stored in the event bucket ({len(objects)} object(s) under events/) "
                f"and delivered whole; the queue's dataref redirected to its {len(fetched) // 1024} KiB of data; "
                "an edited token 404")

    def webhook_received(self):
        headers, body = until("the webhook receiving the event", lambda: self.receiver.seen["/hook"][:1], 30)[0]
        if json.dumps(body).find(self.event_id) < 0:
            raise Failure(f"the webhook got another body: {json.dumps(body)[:300]}")
        signature = {k.lower(): v for k, v in headers.items()}.get("webhook-signature", "")
        return f"signed ({signature[:6]}...)" if signature else "unsigned"

    def sqs_received(self):
        url, _, _ = self.customer_queue
        sqs = client(self.admin, "sqs")

        def one():
            out = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=1)
            return out.get("Messages")

        message = until("the customer queue receiving the event", one, 30, 0)[0]
        if self.event_id not in message["Body"]:
            raise Failure(f"the queue got another body: {message['Body'][:300]}")
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return "one message with the event"

    def stomp_received(self):
        headers, body = stomp_receive(self.broker_password, self.destination, 30)
        if json.dumps(body).find(self.event_id) < 0:
            raise Failure(f"the broker got another body: {json.dumps(body)[:300]}")
        return f"one message on {self.destination}"

    def jobs(self, name):
        status, doc = self.gateway.call("GET", f"/v2/integrations/{self.ids[name]}/jobs")
        if status != 200:
            raise Failure(f"GET .../jobs answered {status}: {json.dumps(doc)[:300]}")
        return doc["data"]

    def logs(self, name):
        status, doc = self.gateway.call("GET", f"/v2/integrations/{self.ids[name]}/logs")
        if status != 200:
            raise Failure(f"GET .../logs answered {status}: {json.dumps(doc)[:300]}")
        return doc["data"]

    def logs_and_jobs(self):
        shown = []
        for name in ("webhook", "aws_sqs", "stomp"):
            jobs = until(f"{name}'s job delivered", lambda: [j for j in self.jobs(name) if j.get("status") == "delivered"], 15)
            logs = self.logs(name)
            if not any(entry.get("succeeded") for entry in logs):
                raise Failure(f"{name}'s logs show no successful attempt: {json.dumps(logs)[:300]}")
            shown.append(f"{name} delivered in {jobs[0]['attempts']} attempt(s)")
        return "; ".join(shown)

    def dead_lettered(self):
        dlq = self.resources["DeadLetterQueue"]["PhysicalResourceId"]
        sqs = client(self.admin, "sqs")

        def in_dlq():
            attrs = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
            return int(attrs["ApproximateNumberOfMessages"]) >= 1

        until("the failing webhook's job in the DLQ", in_dlq, 90, 0.5)
        jobs = until("the failing job's state", lambda: [j for j in self.jobs("failing webhook") if j.get("status") == "failed"], 15)
        logs = self.logs("failing webhook")
        failed_attempts = [entry for entry in logs if not entry.get("succeeded")]
        return f"after {jobs[0]['attempts']} attempts ({self.receiver.flaky_refused} refused at the receiver, {len(failed_attempts)} in the logs)"

    def replay(self):
        with self.receiver.lock:
            self.receiver.flaky_ok = True
        status, doc = self.gateway.call("POST", f"/v2/integrations/{self.ids['failing webhook']}/replay")
        if status != 200 or doc["data"].get("replayed") != 1:
            raise Failure(f"replay answered {status}: {json.dumps(doc)[:300]}")
        until("the replayed job reaching the webhook", lambda: self.receiver.seen["/flaky"], 30)
        until("the replayed job delivered", lambda: [j for j in self.jobs("failing webhook") if j.get("status") == "delivered"], 15)
        dlq = self.resources["DeadLetterQueue"]["PhysicalResourceId"]
        attrs = client(self.admin, "sqs").get_queue_attributes(QueueUrl=dlq, AttributeNames=["All"])["Attributes"]
        left = int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])
        if left:
            raise Failure(f"{left} message(s) left in the DLQ")
        return f"replayed {doc['data']['replayed']}, delivered, the DLQ empty"

    def replay_job(self):
        delivered = [j for j in self.jobs("webhook") if j.get("status") == "delivered"]
        if not delivered:
            raise Failure("no delivered job of the webhook integration to replay")
        old = delivered[0]["id"]
        before = len(self.receiver.seen["/hook"])
        status, doc = self.gateway.call("POST", f"/v2/integrations/{self.ids['webhook']}/jobs/{old}/replay")
        if status != 202 or doc["data"].get("meta", {}).get("replay_of") != old:
            raise Failure(f"replay of job {old} answered {status}: {json.dumps(doc)[:300]}")
        new = doc["data"]["id"]
        until("the replayed job reaching the webhook", lambda: len(self.receiver.seen["/hook"]) > before, 30)
        headers = self.receiver.seen["/hook"][-1][0]
        webhook_id = next((v for k, v in headers.items() if k.lower() == "webhook-id"), None)
        if webhook_id != new:
            raise Failure(f"the replay came with webhook-id {webhook_id}, not the new job's {new}")
        until(
            "the replay delivered, naming the job it replays",
            lambda: [j for j in self.jobs("webhook") if j["id"] == new and j.get("status") == "delivered" and j.get("meta", {}).get("replay_of") == old],
            15,
        )
        return f"202, delivered under webhook-id {new}, replay_of {old}"

    def test_route(self, name):
        status, doc = self.gateway.call("POST", f"/v2/integrations/{self.ids[name]}/test", {"data": {"type": "test", "triggered_by": "order.paid"}})
        if status != 200 or not doc["data"].get("succeeded"):
            raise Failure(f"answered {status}: {json.dumps(doc)[:400]}")
        return f"200, delivered in {doc['data'].get('processing_time')} s"

    def rotation_swept(self):
        """A secret rotation whose overlap has ended leaves the table by the sweeper,
        invoked with its schedule's event under its role: Query on gsi4, GetItem and
        UpdateItem on the table, KMS Decrypt and GenerateDataKey to seal the remaining
        secret again. The overlap's end is moved into the past in the table (as if its
        minute had passed); the webhook's secret still signs afterwards."""
        hook = self.ids["webhook"]
        status, doc = self.gateway.call("POST", f"/v2/integrations/{hook}/rotate-secret", {"data": {
            "type": "secret-rotation", "overlap_minutes": 1}})
        if status != 200 or "secret_rotation" not in doc["data"].get("meta", {}):
            raise Failure(f"rotate-secret answered {status}: {json.dumps(doc)[:300]}")
        ddb = client(self.admin, "dynamodb")
        table = self.resources["Table"]["PhysicalResourceId"]

        def rotating():
            items = ddb.scan(TableName=table)["Items"]
            return [i for i in items if any(hook in v.get("S", "") for v in i.values()) and "retiring_until" in i]

        found = rotating()
        if len(found) != 1 or found[0].get("gsi4pk", {}).get("S") != "ROTATIONS":
            raise Failure(f"the rotating webhook's item is not in the rotation index: {len(found)} item(s)")
        item = found[0]
        ended = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        ddb.update_item(
            TableName=table, Key={"pk": item["pk"], "sk": item["sk"]},
            UpdateExpression="SET retiring_until = :e, gsi4sk = :e",
            ExpressionAttributeValues={":e": {"S": ended}})
        kind, answer = self.functions["SweeperFunction"].invoke(json.loads((ROOT / "events" / "sweeper-schedule.json").read_text()))
        if kind != "response" or not isinstance(answer, dict) or answer.get("removed") != 1:
            raise Failure(f"the sweeper answered {kind}: {json.dumps(answer)[:300]}")
        left = rotating()
        after = ddb.get_item(TableName=table, Key={"pk": item["pk"], "sk": item["sk"]}, ConsistentRead=True)["Item"]
        kept = sorted(k for k in ("retiring_secret_mask", "retiring_until", "gsi4pk", "gsi4sk") if k in after)
        if left or kept:
            raise Failure(f"the previous secret's attributes are still stored: {kept}")
        if after.get("secrets") == item.get("secrets"):
            raise Failure("the sealed secrets were not sealed again without the previous one")
        before = len(self.receiver.seen["/hook"])
        self.test_route("webhook")
        headers = self.receiver.seen["/hook"][before][0]
        signatures = next((v for k, v in headers.items() if k.lower() == "webhook-signature"), "").split()
        if len(signatures) != 1:
            raise Failure(f"a delivery after the sweep carries {len(signatures)} signatures")
        return f"swept by SweeperFunction ({json.dumps(answer)}): the previous secret's mask, end and index keys gone, the secrets sealed again; the next delivery signed once"

    def functions_healthy(self):
        problems = []
        for f in self.functions.values():
            if f.proc.poll() is not None:
                problems.append(f"{f.logical} exited with {f.proc.returncode}")
            elif f.errors:
                problems.append(f"{f.logical} failed {f.errors} of {f.invocations} invocations")
        if self.esm.errors:
            problems.append(f"event source mapping: {self.esm.errors[:3]}")
        if problems:
            raise Failure("; ".join(problems))
        return ", ".join(f"{f.logical} {f.invocations}" for f in self.functions.values()) + f" invocations; {self.esm.batches} batches"

    def no_access_denied(self, offset):
        denied = moto_log_denials(offset)
        if denied:
            raise Failure(f"{len(denied)} call(s) refused, e.g. {denied[0].split('AccessDenied: ', 1)[1]}")
        return "every call of every function was allowed by its role"

    def run(self):
        s = self.steps
        RUN.mkdir(parents=True, exist_ok=True)
        s.run("template translated offline (SAM translator)", lambda: (setattr(self, "sam", load_sam_template()), self.translate())[1], fatal=True)
        s.run("release bootstraps built (x86_64)", self.bootstraps, fatal=True)
        s.run("moto started with IAM authorization", start_moto, fatal=True)
        s.run("setup: an admin user within moto's no-auth allowance", lambda: (setattr(self, "admin", create_admin()), None)[1], fatal=True)
        s.run("stack created in moto's CloudFormation", self.create_stack, fatal=True)
        s.run("table, queues with redrive, key alias and log groups in place", self.resource_types_created)
        s.run("each function's role assumed as the Lambda service does", self.assume_function_roles, fatal=True)
        s.run("IAM enforced on role sessions (deliberate AccessDenied probe)", self.iam_is_enforced)
        offset = (RUN / "moto.log").stat().st_size
        s.run("ActiveMQ, webhook receiver and customer SQS queue ready", self.peers, fatal=True)
        s.run("bootstraps initialised with the stack's environment and their roles' sessions", self.start_functions, fatal=True)
        s.run("SQS event source mapping played as configured", self.start_event_source, fatal=True)
        self.gateway = ApiGateway(self.functions["ApiFunction"], self.functions["IngestFunction"], self.stack_claim())
        s.run("integrations created through API Gateway (JWT claims)", self.create_integrations, fatal=True)
        s.run("order.paid through POST /v2/events (IAM identity) to ingest", self.post_event, fatal=True)
        s.run("webhook received the event", self.webhook_received)
        s.run("customer SQS queue received the event", self.sqs_received)
        s.run("ActiveMQ queue received the event (STOMP over TLS)", self.stomp_received)
        s.run("logs and jobs routes show the delivered attempts", self.logs_and_jobs)
        s.run("failing webhook's job retried, then dead-lettered", self.dead_lettered)
        s.run("replay brings it back and it is delivered", self.replay)
        s.run("a delivered job replayed by id from the archive: a new job, a new webhook-id", self.replay_job)
        for name in ("webhook", "aws_sqs", "stomp"):
            s.run(f"test route delivers to the {name} integration", lambda n=name: self.test_route(n))
        s.run("an event too large for a queue message: stored in S3 by ingest, read back by the fan-out, delivered whole; its dataref fetched through the api", self.large_event)
        s.run("an ended secret rotation swept from the table by the sweeper", self.rotation_swept)
        s.run("functions and event source mapping ran without errors", self.functions_healthy)
        s.run("no AccessDenied for any function during the tour", lambda: self.no_access_denied(offset))

    def stack_claim(self):
        return PARAMETERS.get("StoreClaim") or self.sam["Parameters"]["StoreClaim"]["Default"]


def ensure_activemq():
    script = str(ROOT / "infra" / "activemq.sh")
    status = subprocess.run([script, "status"], capture_output=True, text=True).stdout.strip()
    if status == "running":
        return "running (shared)"
    if answers(61613):
        raise Failure("127.0.0.1:61613 is taken by a broker of another checkout; stop it or run when it is free")
    subprocess.run([script, "start"], check=True)
    started.append(("activemq", lambda: subprocess.run([script, "stop"], check=False)))
    return "started"


def main():
    began = time.monotonic()
    rehearsal = Rehearsal()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        rehearsal.steps.run("ActiveMQ broker", ensure_activemq, fatal=True)
        rehearsal.run()
    except Abort:
        pass
    finally:
        stop_all()
    s = rehearsal.steps
    print(f"rehearsal: {time.monotonic() - began:.0f} s; logs in {RUN.relative_to(ROOT)}/")
    print(f"{s.passed} passed, {s.failed} failed")
    return 1 if s.failed else 0


if __name__ == "__main__":
    sys.exit(main())
