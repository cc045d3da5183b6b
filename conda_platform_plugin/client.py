"""A synchronous client of the platform's REST API, on the standard library only.

The CLI (and later the conda plugin) runs in environments where we cannot count on any HTTP
library being installed, so this speaks HTTP with ``http.client`` directly. Every failure is a
``PlatformError``: the server's error envelope is rebuilt with ``PlatformError.from_envelope``,
and failures met on this side (server unreachable, corrupt download) get their own subclasses,
so callers handle exactly one error type.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from . import __version__
from .errors import BadRequest, PlatformError
from .names import ARTIFACT_TYPES

#: progress callback: (bytes done, bytes in total)
Progress = Callable[[int, int], None]
CHUNK = 1 << 18


class ClientError(PlatformError):
    """A failure met on the client side, with no HTTP status of its own (status 0 never comes from a server)."""

    status, code = 0, "client_error"


class ServerUnreachable(ClientError):
    status, code = 0, "server_unreachable"


class ServerTimeout(ClientError):
    status, code = 0, "server_timeout"


class BadResponse(ClientError):
    status, code = 0, "bad_response"


class DownloadCorrupt(ClientError):
    status, code = 0, "download_corrupt"


class LocalFileError(ClientError):
    status, code = 0, "local_file_error"


def channel_base(channel: str) -> str:
    """``CH`` or ``CH/SUB`` → its REST base path; the server validates the names themselves."""
    parts = (channel or "").strip("/").split("/")
    if len(parts) > 2 or not all(parts) or any(p in (".", "..") for p in parts):
        raise BadRequest(f"invalid channel {channel!r}: use CH or CH/SUB", detail={"channel": channel})
    base = f"/api/channels/{_q(parts[0])}"
    return f"{base}/subchannels/{_q(parts[1])}" if len(parts) == 2 else base


def file_ref(ref: str) -> tuple[str, str]:
    """``SUBDIR/FILENAME`` → (subdir, filename)."""
    subdir, sep, filename = (ref or "").strip("/").partition("/")
    if not sep or not subdir or not filename or "/" in filename:
        raise BadRequest(f"invalid file reference {ref!r}: use SUBDIR/FILENAME", detail={"file": ref})
    return subdir, filename


def _q(segment: str) -> str:
    return quote(segment, safe="")


@dataclass
class _Upload:
    """A multipart/form-data body streamed from disk, with its length known before sending."""

    paths: list[Path]
    boundary: str

    def __post_init__(self) -> None:
        self.sizes: list[int] = []
        self.heads: list[bytes] = []
        for p in self.paths:
            try:
                st = p.stat()
            except OSError as e:
                raise LocalFileError(f"cannot read {p}: {e.strerror or e}", detail={"file": str(p)}) from None
            if not p.is_file():
                raise LocalFileError(f"cannot upload {p}: not a file", detail={"file": str(p)})
            self.sizes.append(st.st_size)
            name = p.name.replace("\\", "\\\\").replace('"', "%22").replace("\r", "").replace("\n", "")
            self.heads.append(
                f'--{self.boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n".encode()
            )
        self.tail = f"--{self.boundary}--\r\n".encode()
        self.length = sum(len(h) + s + 2 for h, s in zip(self.heads, self.sizes)) + len(self.tail)

    def chunks(self) -> Iterator[bytes]:
        for path, head, size in zip(self.paths, self.heads, self.sizes):
            yield head
            sent = 0
            try:
                with path.open("rb") as f:
                    while sent < size:
                        chunk = f.read(min(CHUNK, size - sent))
                        if not chunk:
                            break
                        sent += len(chunk)
                        yield chunk
            except OSError as e:
                raise LocalFileError(f"cannot read {path}: {e.strerror or e}", detail={"file": str(path)}) from None
            if sent != size:  # the declared Content-Length would be a lie: stop rather than send a wrong body
                raise LocalFileError(f"{path} changed size while it was being uploaded", detail={"file": str(path)})
            yield b"\r\n"
        yield self.tail


class PlatformClient:
    """One method per REST endpoint the command line needs; JSON in, JSON (dicts) out."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0):
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadRequest(f"invalid server URL {url!r}: use http://HOST[:PORT] or https://…", detail={"url": url})
        try:
            self._port = parts.port
        except ValueError:
            raise BadRequest(f"invalid server URL {url!r}: bad port", detail={"url": url}) from None
        self.url = url.strip().rstrip("/")
        self.token = token or None
        self.timeout = timeout
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._prefix = parts.path.rstrip("/")  # a server published under a path behind a reverse proxy

    # -- transport -----------------------------------------------------------------------------
    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return cls(self._host, self._port, timeout=timeout)

    def _open(self, method: str, path: str, *, query: dict[str, Any] | None = None, body: bytes | None = None,
              stream: Iterable[bytes] | None = None, length: int = 0, content_type: str | None = None,
              progress: Progress | None = None, timeout: float | None = None) -> http.client.HTTPResponse:
        """Send one request and return the response whatever its status; transport failures raise."""
        query = {k: v for k, v in (query or {}).items() if v is not None}
        target = self._prefix + path + (f"?{urlencode(query)}" if query else "")
        conn = self._connection(timeout or self.timeout)
        headers = {"Accept": "application/json", "User-Agent": f"conda-platform/{__version__}"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if content_type:
            headers["Content-Type"] = content_type
        if body is not None:
            length = len(body)
        if body is not None or stream is not None or method in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(length)
        try:
            try:
                conn.putrequest(method, target, skip_accept_encoding=True)
                for k, v in headers.items():
                    conn.putheader(k, v)
                conn.endheaders(body)
                if stream is not None:
                    sent = 0
                    if progress:
                        progress(0, length)
                    for chunk in stream:
                        conn.send(chunk)
                        sent += len(chunk)
                        if progress:
                            progress(sent, length)
            except (BrokenPipeError, ConnectionResetError):
                # The server may answer (an error) before reading the whole body: read that answer.
                if stream is None:
                    raise
            return conn.getresponse()
        except TimeoutError:
            conn.close()
            raise ServerTimeout(f"the server at {self.url} did not answer within {timeout or self.timeout:g} s",
                                detail={"url": self.url}) from None
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
            raise ServerUnreachable(f"cannot reach the server at {self.url}: {reason}", detail={"url": self.url}) from None
        except BaseException:
            conn.close()
            raise

    def _error(self, resp: http.client.HTTPResponse, raw: bytes) -> PlatformError:
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            return PlatformError.from_envelope(resp.status, body)
        message = f"HTTP {resp.status} {resp.reason}".strip()
        if 300 <= resp.status < 400 and resp.getheader("Location"):
            message += f": the server redirects to {resp.getheader('Location')}; use that URL with --url"
        return PlatformError.from_envelope(resp.status, {"error": {"message": message}})

    def request(self, method: str, path: str, *, query: dict[str, Any] | None = None, json_body: Any = None,
                **kw: Any) -> Any:
        """One JSON request; a non-2xx answer raises the server's error."""
        if json_body is not None:
            kw.update(body=json.dumps(json_body).encode(), content_type="application/json")
        raw = self._body(self._open(method, path, query=query, **kw))
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise BadResponse(f"the server at {self.url} answered {method} {path} with something that is not JSON",
                              detail={"url": self.url}) from None

    def get_bytes(self, path: str) -> bytes:
        """The body of a GET as bytes (an index file, not JSON of the API); a non-2xx answer raises."""
        return self._body(self._open("GET", path))

    def _body(self, resp: http.client.HTTPResponse) -> bytes:
        """The whole body of a 2xx answer; otherwise the server's error is raised."""
        try:
            try:
                raw = resp.read()
            except (OSError, http.client.HTTPException) as e:
                raise ServerUnreachable(f"the connection to {self.url} broke: {e}", detail={"url": self.url}) from None
            if not 200 <= resp.status < 300:
                raise self._error(resp, raw)
            return raw
        finally:
            resp.close()

    def _get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query=query)

    def _all(self, path: str, **query: Any) -> dict:
        """Every item of a paged listing, as one ``{"items": [...], "total": N}``."""
        items: list = []
        page = 1
        while True:
            data = self._get(path, page=page, per_page=1000, **query)
            items.extend(data["items"])
            if not data["items"] or len(items) >= data["total"]:
                return {"items": items, "total": data["total"]}
            page += 1

    # -- channels ------------------------------------------------------------------------------
    def list_channels(self, parent: str | None = None) -> dict:
        """All top-level channels, or the subchannels of ``parent``."""
        return self._all(channel_base(parent) + "/subchannels") if parent else self._all("/api/channels")

    def get_channel(self, channel: str) -> dict:
        return self._get(channel_base(channel))

    def create_channel(self, channel: str, *, description: str = "", private: bool = False) -> dict:
        channel_base(channel)  # validates the shape: CH or CH/SUB
        parent, _, sub = channel.strip("/").partition("/")
        path, name = (channel_base(parent) + "/subchannels", sub) if sub else ("/api/channels", parent)
        return self.request("POST", path, json_body={"name": name, "description": description, "private": private})

    def update_channel(self, channel: str, *, description: str | None = None, private: bool | None = None) -> dict:
        changes: dict[str, Any] = {}
        if description is not None:
            changes["description"] = description
        if private is not None:
            changes["private"] = private
        return self.request("PATCH", channel_base(channel), json_body=changes)

    def delete_channel(self, channel: str) -> dict:
        return self.request("DELETE", channel_base(channel))

    def freeze_channel(self, channel: str) -> dict:
        return self.request("POST", channel_base(channel) + "/freeze")

    def unfreeze_channel(self, channel: str) -> dict:
        return self.request("POST", channel_base(channel) + "/unfreeze")

    # -- files ---------------------------------------------------------------------------------
    def upload(self, channel: str, paths: Sequence[str | os.PathLike[str]], *, subdir: str | None = None,
               progress: Progress | None = None) -> dict:
        """Upload package files in one request (all or nothing), streamed from disk."""
        if not paths:
            raise BadRequest("no files to upload")
        body = _Upload([Path(p) for p in paths], f"conda-platform-{uuid.uuid4().hex}")
        return self.request(
            "POST", channel_base(channel) + "/files", query={"subdir": subdir}, stream=body.chunks(),
            length=body.length, content_type=f"multipart/form-data; boundary={body.boundary}", progress=progress,
            # after the last byte the server validates and publishes: give it longer than a plain request
            timeout=max(self.timeout, 600.0),
        )

    def list_files(self, channel: str, *, name: str | None = None, type: str | None = None,
                   subdir: str | None = None, version: str | None = None) -> dict:
        return self._all(channel_base(channel) + "/files", name=name, type=type, subdir=subdir, version=version)

    def get_file(self, channel: str, ref: str) -> dict:
        subdir, filename = file_ref(ref)
        return self._get(f"{channel_base(channel)}/files/{_q(subdir)}/{_q(filename)}")

    def download(self, channel: str, ref: str, dest_dir: str | os.PathLike[str] = ".", *,
                 progress: Progress | None = None) -> tuple[Path, dict]:
        """Stream a package file to ``dest_dir``; it appears only whole and with the recorded sha256."""
        record = self.get_file(channel, ref)
        subdir, filename = file_ref(ref)
        dest_dir = Path(dest_dir)
        if not dest_dir.is_dir():
            raise LocalFileError(f"cannot save to {dest_dir}: not a directory", detail={"dir": str(dest_dir)})
        resp = self._open("GET", f"{channel_base(channel)}/files/{_q(subdir)}/{_q(filename)}/download")
        try:
            if not 200 <= resp.status < 300:
                raise self._error(resp, resp.read())
            fd, tmp = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=dest_dir)
            try:
                digest, done = hashlib.sha256(), 0
                with os.fdopen(fd, "wb") as f:
                    if progress:
                        progress(0, record["size"])
                    while chunk := self._read(resp, CHUNK):
                        f.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        if progress:
                            progress(done, record["size"])
                    f.flush()
                    os.fsync(f.fileno())
                if done != record["size"] or digest.hexdigest() != record["sha256"]:
                    raise DownloadCorrupt(
                        f"{subdir}/{filename} arrived corrupt ({done} bytes, sha256 {digest.hexdigest()}; "
                        f"expected {record['size']} bytes, sha256 {record['sha256']}): nothing was saved",
                        detail={"file": f"{subdir}/{filename}", "sha256": digest.hexdigest(),
                                "expected_sha256": record["sha256"]},
                    )
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(tmp, 0o666 & ~umask)  # mkstemp made it private; a download gets ordinary permissions
                target = dest_dir / filename
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        finally:
            resp.close()
        return target, record

    def _read(self, resp: http.client.HTTPResponse, n: int) -> bytes:
        try:
            return resp.read(n)
        except TimeoutError:
            raise ServerTimeout(f"the server at {self.url} stopped sending for {self.timeout:g} s",
                                detail={"url": self.url}) from None
        except (OSError, http.client.HTTPException) as e:
            raise ServerUnreachable(f"the connection to {self.url} broke: {e}", detail={"url": self.url}) from None

    def delete_files(self, channel: str, refs: Sequence[str]) -> dict:
        """Delete files all or nothing (one new generation)."""
        for r in refs:
            file_ref(r)
        return self.request("POST", channel_base(channel) + "/files/delete", json_body={"files": list(refs)})

    def copy_files(self, channel: str, refs: Sequence[str], target: str) -> dict:
        channel_base(target)
        return self.request("POST", channel_base(channel) + "/files/copy",
                            json_body={"files": list(refs), "target": target.strip("/")})

    def move_files(self, channel: str, refs: Sequence[str], target: str) -> dict:
        channel_base(target)
        return self.request("POST", channel_base(channel) + "/files/move",
                            json_body={"files": list(refs), "target": target.strip("/")})

    def yank_file(self, channel: str, ref: str, *, reason: str | None = None, yanked: bool = True) -> dict:
        """Yank (PEP 592, with an optional reason) or un-yank one python file."""
        subdir, filename = file_ref(ref)
        path = f"{channel_base(channel)}/files/{_q(subdir)}/{_q(filename)}/yank"
        if not yanked:
            return self.request("DELETE", path)
        return self.request("POST", path, json_body={"reason": reason} if reason else {})

    # -- artifacts -----------------------------------------------------------------------------
    def _artifact(self, channel: str, name: str, type: str) -> str:
        return f"{channel_base(channel)}/artifacts/{_q(type)}/{_q(name)}"

    def list_artifacts(self, channel: str) -> dict:
        return self._all(channel_base(channel) + "/artifacts")

    def get_artifact(self, channel: str, name: str, type: str = "conda") -> dict:
        return self._get(self._artifact(channel, name, type))

    def artifact_files(self, channel: str, name: str, type: str = "conda") -> dict:
        return self._all(self._artifact(channel, name, type) + "/files")

    def artifact_dependencies(self, channel: str, name: str, type: str = "conda", version: str | None = None) -> dict:
        return self._get(self._artifact(channel, name, type) + "/dependencies", version=version)

    def artifact_readme(self, channel: str, name: str, type: str = "conda") -> dict:
        return self._get(self._artifact(channel, name, type) + "/readme")

    def artifact_dependents(self, channel: str, name: str, type: str = "conda") -> dict:
        return self._all(self._artifact(channel, name, type) + "/dependents")

    def artifact_badges(self, channel: str, name: str, type: str = "conda", *, with_token: bool = False) -> dict:
        """Badge URLs and embed snippets; ``with_token``: a private channel's carry this client's token."""
        token = self.token if with_token else None
        return self._get(self._artifact(channel, name, type) + "/badges", token=token)

    def file_sbom(self, channel: str, ref: str, fmt: str = "cyclonedx") -> dict:
        subdir, filename = file_ref(ref)
        return self._get(f"{channel_base(channel)}/files/{_q(subdir)}/{_q(filename)}/sbom", format=fmt)

    def delete_artifact(self, channel: str, name: str, type: str = "conda") -> dict:
        return self.request("DELETE", self._artifact(channel, name, type))

    # -- mirrors -------------------------------------------------------------------------------
    def _mirror(self, channel: str, name: str) -> str:
        return f"{channel_base(channel)}/mirrors/{_q(name)}"

    def list_mirrors(self, channel: str | None = None) -> dict:
        """The mirrors of a channel, or every mirror you manage."""
        return self._all(channel_base(channel) + "/mirrors") if channel else self._all("/api/mirrors")

    def create_mirror(self, channel: str, name: str, source_url: str, **fields: Any) -> dict:
        body = {"name": name, "source_url": source_url, **{k: v for k, v in fields.items() if v is not None}}
        return self.request("POST", channel_base(channel) + "/mirrors", json_body=body)

    def get_mirror(self, channel: str, name: str) -> dict:
        return self._get(self._mirror(channel, name))

    def update_mirror(self, channel: str, name: str, **changes: Any) -> dict:
        return self.request("PATCH", self._mirror(channel, name), json_body=changes)

    def delete_mirror(self, channel: str, name: str, *, remove_packages: bool = False) -> dict:
        return self.request("DELETE", self._mirror(channel, name),
                            query={"remove_packages": "true" if remove_packages else None})

    def mirror_action(self, channel: str, name: str, action: str) -> dict:
        """``run``, ``stop`` or ``restart``: the run it concerns."""
        if action not in ("run", "stop", "restart"):
            raise BadRequest(f"unknown mirror action {action!r}")
        return self.request("POST", f"{self._mirror(channel, name)}/{action}")

    def mirror_run(self, channel: str, name: str, run_id: int) -> dict:
        return self._get(f"{self._mirror(channel, name)}/runs/{int(run_id)}")

    def mirror_runs(self, channel: str, name: str, per_page: int = 20) -> dict:
        return self._get(f"{self._mirror(channel, name)}/runs", per_page=per_page)

    def mirror_packages(self, channel: str, name: str, *, state: str = "published", per_page: int = 50) -> dict:
        return self._get(f"{self._mirror(channel, name)}/packages", state=state, per_page=per_page)

    def dependency_report(self, channel: str, mirror: str | None = None, fmt: str = "json",
                          type_: str | None = None) -> Any:
        """A mirror's (or the whole channel's, of one artifact type) dependency report: a dict, or the CSV text."""
        path = f"{self._mirror(channel, mirror)}/report" if mirror else f"{channel_base(channel)}/report"
        query = {"format": fmt, **({"type": type_} if type_ and not mirror else {})}
        if fmt == "json":
            return self._get(path, **query)
        resp = self._open("GET", path, query=query)
        try:
            raw = resp.read()
            if not 200 <= resp.status < 300:
                raise self._error(resp, raw)
            return raw.decode()
        finally:
            resp.close()

    # -- search --------------------------------------------------------------------------------
    def search(self, query: str = "", *, channel: str | None = None, type: str | None = None,
               subdir: str | None = None, license: str | None = None, page: int = 1, per_page: int = 50) -> dict:
        return self._get("/api/search", q=query, channel=channel, type=type, subdir=subdir, license=license,
                         page=page, per_page=per_page)

    # -- identity and access -------------------------------------------------------------------
    def whoami(self) -> dict:
        """Who the token belongs to (``anonymous: true`` without one)."""
        return self._get("/api/whoami")

    def list_tokens(self, user: str | None = None) -> dict:
        """Your tokens, or ``user``'s (needs users.manage); never their secrets."""
        return self._get("/api/tokens", user=user)

    def create_token(self, *, description: str = "", scopes: Sequence[str] | None = None,
                     expires_in_days: float | None = None, user: str | None = None) -> dict:
        """A new token; the answer's ``token`` is its secret, which the server never shows again."""
        body: dict[str, Any] = {"description": description,
                                "scopes": None if scopes is None else list(scopes),
                                "expires_in_days": expires_in_days}
        if user is not None:
            body["user"] = user
        return self.request("POST", "/api/tokens", json_body=body)

    def revoke_token(self, token_id: int) -> dict:
        return self.request("DELETE", f"/api/tokens/{int(token_id)}")

    def list_users(self) -> dict:
        return self._get("/api/users")

    def create_user(self, name: str, *, kind: str = "user", admin: bool = False) -> dict:
        return self.request("POST", "/api/users", json_body={"name": name, "kind": kind, "admin": admin})

    def get_user(self, name: str) -> dict:
        return self._get(f"/api/users/{_q(name)}")

    def grant(self, name: str, permission: str) -> dict:
        """Grant ``channel.read|write|manage:CH[/SUB]`` or a global attribute; returns the user."""
        return self.request("POST", f"/api/users/{_q(name)}/grants", json_body={"permission": permission})

    def revoke(self, name: str, permission: str) -> dict:
        return self.request("POST", f"/api/users/{_q(name)}/grants/revoke", json_body={"permission": permission})

    def audit(self, *, actor: str | None = None, page: int = 1, per_page: int = 50) -> dict:
        """One page of the audit log, newest first (admin only)."""
        return self._get("/api/audit", actor=actor, page=page, per_page=per_page)


    # -- policies and CVEs ---------------------------------------------------------------------
    def list_policies(self) -> dict:
        return self._get("/api/policies")

    def get_policy(self, name: str) -> dict:
        return self._get(f"/api/policies/{_q(name)}")

    def create_policy(self, policy: dict) -> dict:
        return self.request("POST", "/api/policies", json_body=policy)

    def update_policy(self, name: str, **changes: Any) -> dict:
        return self.request("PATCH", f"/api/policies/{_q(name)}", json_body=changes)

    def delete_policy(self, name: str) -> dict:
        return self.request("DELETE", f"/api/policies/{_q(name)}")

    def apply_policy(self, name: str, channel: str, mirror: str | None = None, *, detach: bool = False) -> dict:
        body = {"channel": channel.strip("/"), **({"mirror": mirror} if mirror else {})}
        return self.request("POST", f"/api/policies/{_q(name)}/{'detach' if detach else 'apply'}", json_body=body)

    def preview_policy(self, name: str, *, channel: str | None = None, url: str | None = None,
                       subdirs: Sequence[str] | None = None, rules: list | None = None, limit: int = 1000) -> dict:
        body: dict[str, Any] = {"limit": limit}
        if channel:
            body["channel"] = channel.strip("/")
        if url:
            body["url"] = url
        if subdirs:
            body["subdirs"] = list(subdirs)
        if rules is not None:
            body["rules"] = rules
        return self.request("POST", f"/api/policies/{_q(name)}/preview", json_body=body)

    def import_cves(self, records: list[dict]) -> dict:
        return self.request("POST", "/api/cves", json_body={"records": records})

    def list_cves(self, **query: Any) -> dict:
        return self._get("/api/cves", **query)

    def get_cve(self, ident: str) -> dict:
        return self._get(f"/api/cves/{_q(ident)}")

    def artifact_cves(self, channel: str, name: str, type: str = "conda") -> dict:
        return self._get(self._artifact(channel, name, type) + "/cves")


__all__ = [
    "ARTIFACT_TYPES", "BadResponse", "ClientError", "DownloadCorrupt", "LocalFileError", "PlatformClient",
    "ServerTimeout", "ServerUnreachable", "channel_base", "file_ref",
]
