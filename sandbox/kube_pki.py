"""Certificates and kubeconfigs of the sandbox's Kubernetes control plane.

One CA signs everything: the apiserver's serving cert and one client cert per user (admin,
controller-manager, scheduler). The apiserver authenticates a client cert by its subject:
CN is the user name, O the groups. Keys are ECDSA P-256 (a whole PKI in milliseconds, where
RSA would take seconds on a small machine); the service-account key pair is ECDSA too (ES256).

Kubeconfigs refer to the PEM files by path, so `kubectl` and kovn's client (kube/client.py:
the controller, the node agents, the sandbox's kubelets and waits) read the same files.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Names the apiserver answers to: loopback for us, the in-cluster names and the first
# service IP (10.96.0.1, the `kubernetes` Service) for pods.
APISERVER_SANS = (
    "127.0.0.1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local", "10.96.0.1",
)
# Client certs: file name -> (CN = user, O = groups).
CLIENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "admin": ("kubernetes-admin", ("system:masters",)),
    "kube-controller-manager": ("system:kube-controller-manager", ()),
    "kube-scheduler": ("system:kube-scheduler", ()),
}
VALIDITY = datetime.timedelta(days=365)
CLUSTER_NAME = "kovn-sandbox"


@dataclass(frozen=True)
class Pki:
    """Where the PEM files of one sandbox live (state_dir/pki)."""

    dir: Path

    def cert(self, name: str) -> Path:
        return self.dir / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    @property
    def ca(self) -> Path:
        return self.cert("ca")

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"


def create_pki(pki_dir: Path) -> Pki:
    """Write a fresh CA, the apiserver cert, the client certs and the service-account keys."""
    pki = Pki(Path(pki_dir))
    pki.dir.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = _new_key()
    ca_name = _name("kovn-sandbox-ca")
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    _write(pki, "ca", ca_cert, ca_key)

    def issue(name: str, subject: x509.Name, usage: ExtendedKeyUsageOID,
              sans: x509.SubjectAlternativeName | None = None) -> None:
        key = _new_key()
        builder = (
            _builder(subject, ca_name, key.public_key(), now)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False)
        )
        if sans is not None:
            builder = builder.add_extension(sans, critical=False)
        _write(pki, name, builder.sign(ca_key, hashes.SHA256()), key)

    issue("apiserver", _name("kube-apiserver"), ExtendedKeyUsageOID.SERVER_AUTH,
          _sans(APISERVER_SANS))
    for name, (user, groups) in CLIENTS.items():
        issue(name, _name(user, groups), ExtendedKeyUsageOID.CLIENT_AUTH)

    sa_key = _new_key()
    _write_private(pki.sa_key, sa_key)
    pki.sa_pub.write_bytes(sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return pki


def write_kubeconfig(path: Path, server: str, pki: Pki, client: str) -> Path:
    """A kubeconfig for `server` authenticating with the client cert `client` (see CLIENTS)."""
    user = CLIENTS[client][0]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CLUSTER_NAME, "cluster": {
            "server": server, "certificate-authority": str(pki.ca)}}],
        "users": [{"name": user, "user": {
            "client-certificate": str(pki.cert(client)),
            "client-key": str(pki.key(client))}}],
        "contexts": [{"name": CLUSTER_NAME, "context": {"cluster": CLUSTER_NAME, "user": user}}],
        "current-context": CLUSTER_NAME,
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, orgs: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in orgs]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             now: datetime.datetime) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))  # tolerate small clock skew
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign,
        crl_sign=cert_sign, encipher_only=False, decipher_only=False)


def _sans(hosts: tuple[str, ...]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _write(pki: Pki, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    pki.cert(name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(pki.key(name), key)


def _write_private(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
