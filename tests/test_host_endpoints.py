"""kit.host_endpoints: which field of the stack to fix when a host's engine does not answer
(the messages are the docker CLI 28's own, as seen against a real dockerd with --tlsverify)."""

from __future__ import annotations

from kit.host_endpoints import advice
from kit.spec import HostEntry

TLS = {"ca": "/x/ca.pem", "cert": "/x/cert.pem", "key": "/x/key.pem"}


def entry(**kw: object) -> HostEntry:
    return HostEntry.model_validate({"gpus": 1, "gpu_memory_gib": 8, **kw})


def test_tls_errors_name_the_tls_field():
    e = entry(docker="tcp://10.0.0.2:2376", tls=TLS)
    wrong_ca = (
        'error during connect: Get "https://10.0.0.2:2376/v1.50/info": tls: failed to verify '
        "certificate: x509: certificate signed by unknown authority"
    )
    assert advice("b", e, wrong_ca) == (
        "hosts.b.tls.ca is not the CA that signed the engine's certificate"
    )
    refused = "check your TLS client certification settings: ... remote error: tls: bad certificate"
    assert "hosts.b.tls.cert/key" in advice("b", e, refused)
    missing = "unable to resolve docker endpoint: open /x/ca.pem: no such file or directory"
    assert "hosts.b.tls (ca, cert, key) does not exist" in advice("b", e, missing)
    down = (
        "Cannot connect to the Docker daemon at tcp://10.0.0.2:2376. Is the docker daemon running?"
    )
    assert advice("b", e, down) == (
        "is the engine listening there (dockerd -H tcp://10.0.0.2:2376)? or fix hosts.b.docker"
    )


def test_a_tls_engine_without_tls_asks_for_it():
    e = entry(docker="tcp://10.0.0.2:2376")
    said = "Error response from daemon: Client sent an HTTP request to an HTTPS server."
    assert advice("b", e, said) == "the engine speaks TLS: give hosts.b.tls (ca, cert, key)"


def test_contexts_and_ssh():
    e = entry(context="gpu-b")
    said = 'unable to resolve docker endpoint: context "gpu-b": context not found: open ...'
    assert advice("b", e, said).startswith("create the context (docker context create gpu-b")
    assert advice("b", e, "Cannot connect") == (
        "check the context's endpoint: docker context inspect gpu-b"
    )
    e = entry(docker="ssh://kit@gpu-b")
    assert "ssh logs in there with a key" in advice("b", e, "exit status 255")
    assert advice("b", entry(docker="unix:///run/x.sock"), "Cannot connect") == ""
