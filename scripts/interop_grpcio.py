"""A third-party gRPC client (Python grpcio) calls the provider over TLS and mutual TLS.

Run by scripts/interop-grpcio, which starts the providers and makes the certificates:
  interop_grpcio.py GEN_DIR CERT_DIR TLS_ADDR MTLS_ADDR SERVER_NAME
Prints one line per check and exits 1 if any failed.
"""

import sys

import grpc

gen, certs, tls_addr, mtls_addr, server_name = sys.argv[1:6]
sys.path.insert(0, gen)
import greeter_pb2  # noqa: E402
import greeter_pb2_grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402


def read(path):
    with open(path, "rb") as f:
        return f.read()


ca = read(f"{certs}/consumer/ca.crt")
client_cert, client_key = read(f"{certs}/consumer/tls.crt"), read(f"{certs}/consumer/tls.key")
# grpcio connects to 127.0.0.1 and verifies the certificate against the Service's DNS name, as the
# balanced client does.
options = [("grpc.ssl_target_name_override", server_name)]
failures = []


def check(what, fn, expect_code=None, expect_words=""):
    try:
        reply = fn()
        if expect_code is not None:
            failures.append(what)
            print(f"FAIL {what}: answered {reply!r}, expected {expect_code.name}")
        else:
            print(f"ok   {what}: {reply}")
    except grpc.RpcError as e:
        if expect_code is not None and e.code() == expect_code and expect_words in (e.details() or ""):
            print(f"ok   {what}: {e.code().name}: {e.details()}")
        else:
            failures.append(what)
            print(f"FAIL {what}: {e.code().name}: {e.details()}")


def hello(channel):
    stub = greeter_pb2_grpc.GreeterServiceStub(channel)
    metadata = [("tri-service-version", "1.0.0")]
    return stub.SayHello(greeter_pb2.HelloRequest(name="grpcio"), timeout=5, metadata=metadata).message


def stream(channel):
    stub = greeter_pb2_grpc.GreeterServiceStub(channel)
    replies = stub.SayHelloStream(greeter_pb2.HelloStreamRequest(name="grpcio", count=3), timeout=5)
    return [r.message for r in replies]


tls = grpc.ssl_channel_credentials(root_certificates=ca)
with grpc.secure_channel(tls_addr, tls, options=options) as ch:
    check("TLS: SayHello", lambda: hello(ch))
    check("TLS: SayHelloStream", lambda: stream(ch))

with grpc.insecure_channel(tls_addr) as ch:
    check("plaintext client on the TLS port", lambda: hello(ch), grpc.StatusCode.UNAUTHENTICATED, "requires TLS")
    health = health_pb2_grpc.HealthStub(ch)
    check(
        "plaintext health check on the TLS port (kubelet's gRPC probe)",
        lambda: health_pb2.HealthCheckResponse.ServingStatus.Name(
            health.Check(health_pb2.HealthCheckRequest(service="org.apache.dubbo.demo.GreeterService"), timeout=5).status
        ),
    )

mtls = grpc.ssl_channel_credentials(root_certificates=ca, private_key=client_key, certificate_chain=client_cert)
with grpc.secure_channel(mtls_addr, mtls, options=options) as ch:
    check("mutual TLS: SayHello with the consumer's certificate", lambda: hello(ch))
with grpc.secure_channel(mtls_addr, tls, options=options) as ch:
    check(
        "mutual TLS: no client certificate",
        lambda: hello(ch),
        grpc.StatusCode.UNAUTHENTICATED,
        "no client certificate",
    )
greeter = grpc.ssl_channel_credentials(
    root_certificates=ca, private_key=read(f"{certs}/greeter/tls.key"), certificate_chain=read(f"{certs}/greeter/tls.crt")
)
with grpc.secure_channel(mtls_addr, greeter, options=options) as ch:
    check(
        "mutual TLS: a certificate whose name is not allowed",
        lambda: hello(ch),
        grpc.StatusCode.PERMISSION_DENIED,
        "not allowed",
    )
with grpc.secure_channel(tls_addr, tls, options=[("grpc.ssl_target_name_override", "wrong.example.com")]) as ch:
    check("TLS: a wrong server name is refused by grpcio", lambda: hello(ch), grpc.StatusCode.UNAVAILABLE)

if failures:
    print(f"{len(failures)} check(s) failed: {', '.join(failures)}")
    sys.exit(1)
print("all grpcio checks passed")
