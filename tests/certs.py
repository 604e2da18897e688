"""A throw-away CA, server and client certificate for TLS tests (openssl CLI)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _run(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca_and_certs(d: Path) -> dict[str, Path]:
    p = {k: d / f"{k}.pem" for k in ("ca_key", "ca_cert", "server_key", "server_cert", "client_key", "client_cert")}
    _run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=sipec-test-ca",
         "-keyout", str(p["ca_key"]), "-out", str(p["ca_cert"]))
    for who, cn in (("server", "localhost"), ("client", "sipec-client")):
        csr = d / f"{who}.csr"
        ext = d / f"{who}.ext"
        ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n" if who == "server"
                       else "extendedKeyUsage=clientAuth\n")
        _run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}", "-keyout", str(p[f"{who}_key"]),
             "-out", str(csr))
        _run("x509", "-req", "-in", str(csr), "-CA", str(p["ca_cert"]), "-CAkey", str(p["ca_key"]),
             "-CAcreateserial", "-days", "2", "-out", str(p[f"{who}_cert"]), "-extfile", str(ext))
    return p
