"""Where a Kubernetes API server is and how to show who we are: a kubeconfig or the pod's account.

A kubeconfig (``kubectl config view`` prints one) is read for its current context: the
cluster's ``server`` and CA (``certificate-authority`` file or ``-data``, or
``insecure-skip-tls-verify``) and the user's ``token`` / ``tokenFile`` or client
certificate and key (files or ``-data``).  Relative paths are relative to the file, as
kubectl reads them.  Exec plugins, auth providers and basic auth are refused by name:
lbcore runs no other program to log in.

In a pod (no kubeconfig given), the API server is ``KUBERNETES_SERVICE_HOST`` and
``KUBERNETES_SERVICE_PORT``, with the service account's token and CA in
``/var/run/secrets/kubernetes.io/serviceaccount/``.  Tokens are read from their file at
every connection: the kubelet rotates projected service-account tokens (client-go reads
the file again too).
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import yaml

from ..errors import ConfigError

__all__ = ["Cluster", "SERVICE_ACCOUNT", "from_kubeconfig", "in_cluster"]

#: Where a pod finds its service account's token and the cluster's CA.
SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
_REFUSED_USER_FIELDS = {
    "exec": "an exec credential plugin",
    "auth-provider": "an auth provider",
    "username": "basic authentication",
}


@dataclass(frozen=True)
class Cluster:
    """An API server's address, the TLS to reach it, and the bearer token (if any)."""

    server: str
    ssl: ssl.SSLContext | bool
    token: Callable[[], str | None]

    def headers(self) -> dict[str, str]:
        """The headers of every request: the bearer token, read now."""
        token = self.token()
        return {"Authorization": f"Bearer {token}"} if token else {}


def _named(config: dict, section: str, name: object, where: str) -> dict:
    """The body of the entry called ``name`` in a kubeconfig list (``clusters``, ...)."""
    entries = config.get(section) or []
    inner = section[:-1]  # clusters -> cluster
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and entry.get("name") == name:
            body = entry.get(inner)
            if not isinstance(body, dict):
                raise ConfigError(f"{section}[{name}].{inner}", body, "must be a mapping", where=where)
            return body
    names = [entry.get("name") for entry in entries if isinstance(entry, dict)] if isinstance(entries, list) else []
    raise ConfigError(section, name, f"has no entry of that name; valid: {', '.join(map(str, names)) or 'none'}", where=where)


def _read_file(path: str, field: str, where: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise ConfigError(field, path, f"cannot be read: {error.strerror}", where=where) from None


def _pem(body: Mapping[str, Any], key: str, base: str, field: str, where: str) -> bytes | None:
    """A PEM from ``key-data`` (base64) or the file at ``key``; None if neither is set."""
    if body.get(f"{key}-data"):
        try:
            return base64.b64decode(body[f"{key}-data"], validate=True)
        except (ValueError, TypeError):
            raise ConfigError(f"{field}.{key}-data", body[f"{key}-data"], "is not base64", where=where) from None
    if body.get(key):
        return _read_file(os.path.join(base, str(body[key])), f"{field}.{key}", where)
    return None


def _context(ca: bytes | None, insecure: bool, certificate: bytes | None, key: bytes | None,
             where: str) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif ca is not None:
        try:
            context.load_verify_locations(cadata=ca.decode("ascii"))
        except (ssl.SSLError, UnicodeDecodeError, ValueError):
            raise ConfigError("certificate-authority", "(PEM)", "holds no readable CA certificate", where=where) from None
    if certificate is not None:
        if key is None:
            raise ConfigError("client-key", None, "is required with client-certificate", where=where)
        # ssl loads a client certificate from files only: hand it private ones, briefly
        with tempfile.TemporaryDirectory() as directory:
            paths = []
            for name, pem in (("cert.pem", certificate), ("key.pem", key)):
                path = os.path.join(directory, name)
                with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as file:
                    file.write(pem)
                paths.append(path)
            try:
                context.load_cert_chain(*paths)
            except ssl.SSLError as error:
                raise ConfigError("client-certificate", "(PEM)", f"and its key cannot be used: {error.reason}",
                                  where=where) from None
    return context


def from_kubeconfig(path: str) -> Cluster:
    """The cluster of a kubeconfig's current context; `ConfigError` naming the file and field.

    >>> from_kubeconfig("/nonexistent/kubeconfig")
    Traceback (most recent call last):
    ...
    lbcore.errors.ConfigError: kubeconfig: '/nonexistent/kubeconfig' cannot be read: No such file or directory
    """
    text = _read_file(path, "kubeconfig", "").decode("utf-8", "replace")
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError("kubeconfig", path, f"is not valid YAML: {error}") from None
    if not isinstance(config, dict):
        raise ConfigError("kubeconfig", path, "must be a mapping with clusters, users and contexts")
    base = os.path.dirname(os.path.abspath(path))
    current = config.get("current-context")
    if not current:
        raise ConfigError("current-context", current, "is required: it names the context to use", where=path)
    context = _named(config, "contexts", current, path)
    cluster = _named(config, "clusters", context.get("cluster"), path)
    user = _named(config, "users", context.get("user"), path) if context.get("user") else {}
    server = cluster.get("server")
    if not isinstance(server, str) or not server.startswith(("https://", "http://")):
        raise ConfigError(f"clusters[{context.get('cluster')}].cluster.server", server, "must be an http(s):// URL", where=path)
    user_field = f"users[{context.get('user')}].user"
    for refused, what in _REFUSED_USER_FIELDS.items():
        if user.get(refused):
            raise ConfigError(f"{user_field}.{refused}", user[refused],
                              f"is {what}, which lbcore does not run; use a token or a client certificate", where=path)
    if user.get("token"):
        token = str(user["token"])
        read_token: Callable[[], str | None] = lambda: token  # noqa: E731
    elif user.get("tokenFile"):
        token_path = os.path.join(base, str(user["tokenFile"]))
        _read_file(token_path, f"{user_field}.tokenFile", path)
        read_token = lambda: _read_file(token_path, "tokenFile", path).decode().strip()  # noqa: E731
    else:
        read_token = lambda: None  # noqa: E731
    if server.startswith("http://"):
        return Cluster(server.rstrip("/"), False, read_token)
    cluster_field = f"clusters[{context.get('cluster')}].cluster"
    tls = _context(
        _pem(cluster, "certificate-authority", base, cluster_field, path),
        bool(cluster.get("insecure-skip-tls-verify")),
        _pem(user, "client-certificate", base, user_field, path),
        _pem(user, "client-key", base, user_field, path),
        path,
    )
    return Cluster(server.rstrip("/"), tls, read_token)


def in_cluster(environ: Mapping[str, str] = os.environ, account: str = SERVICE_ACCOUNT) -> Cluster:
    """The cluster a pod runs in, from its environment and service account directory."""
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise ConfigError("source", "kubernetes", "needs --kubeconfig PATH outside a pod "
                          "(KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set)")
    token_path = os.path.join(account, "token")
    ca_path = os.path.join(account, "ca.crt")
    _read_file(token_path, "token", account)
    tls = _context(_read_file(ca_path, "ca.crt", account), False, None, None, ca_path)
    host = f"[{host}]" if ":" in host else host
    return Cluster(f"https://{host}:{port}", tls,
                   lambda: _read_file(token_path, "token", account).decode().strip())
