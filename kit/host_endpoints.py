"""What to change when a host's Docker endpoint (``hosts.NAME.docker`` / ``context`` / ``tls``)
does not answer: the docker CLI's error says what went wrong (an unknown CA, a refused client
certificate, a missing context, nothing listening); this says which field of the stack to fix.
"""

from __future__ import annotations

from kit.spec import HostEntry


def advice(host: str, entry: HostEntry, error: str) -> str:
    """One sentence naming the stack field to fix for ``error`` (the CLI's message), or ""."""
    text = error.lower()
    field = f"hosts.{host}"
    if entry.context:
        if "context not found" in text:
            return (
                f"create the context (docker context create {entry.context} --docker host=...) "
                f"or fix {field}.context"
            )
        return f"check the context's endpoint: docker context inspect {entry.context}"
    if "unknown authority" in text or "x509" in text:
        return f"{field}.tls.ca is not the CA that signed the engine's certificate"
    if "bad certificate" in text or "client certification" in text:
        return (
            f"the engine refused the client certificate of {field}.tls.cert/key: use one signed "
            "by the CA the engine trusts (its --tlscacert)"
        )
    if entry.tls is not None and "no such file" in text:
        return f"a file named in {field}.tls (ca, cert, key) does not exist on this machine"
    if "http request to an https server" in text:
        return f"the engine speaks TLS: give {field}.tls (ca, cert, key)"
    if (entry.docker or "").startswith("ssh://"):
        return (
            f"check that ssh logs in there with a key (no password prompt, a known host key) "
            f"and that the docker CLI runs there, or fix {field}.docker"
        )
    if (entry.docker or "").startswith("tcp://"):
        return f"is the engine listening there (dockerd -H {entry.docker})? or fix {field}.docker"
    return ""
