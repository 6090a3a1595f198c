"""Who may reach the dashboard: loopback by default, a password beyond it.

The dashboard shows prompts and outputs from production logs and can start pilots on the
box, so it binds to 127.0.0.1 unless told otherwise, and whenever it is served on another
address a password (``ROILAB_DASHBOARD_PASSWORD``) is required: ``roilab dashboard``
refuses to start without one, and app/main.py asks for it before any page renders.
"""
from __future__ import annotations

import hmac
import ipaddress

from pydantic import SecretStr

from engine.core.errors import RoilabError

PASSWORD_ENV = "ROILAB_DASHBOARD_PASSWORD"
LOCAL_HOST = "127.0.0.1"


def is_local_address(host: str | None) -> bool:
    """True for a loopback address or ``localhost``; an empty address (Streamlit's default:
    every interface) or any other host name counts as exposed."""
    if not host:
        return False
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str | None, password: str | None) -> None:
    """Refuse to serve the dashboard beyond this machine without a password."""
    if password or is_local_address(host):
        return
    where = f"address {host}" if host else "every network interface"
    raise RoilabError(
        f"The dashboard would listen on {where} with no login. Set a password first "
        f"(export {PASSWORD_ENV}='a long passphrase'; visitors must enter it), or keep it "
        f"on this machine with --host {LOCAL_HOST}.")


def password_matches(given: str, expected: str) -> bool:
    """Constant-time comparison, so response time does not leak the password."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"),
                               expected.encode("utf-8", "surrogatepass"))


def configured_password(password: SecretStr | None) -> str | None:
    """The password from Settings.dashboard_password (a SecretStr or None); empty is none."""
    value = password.get_secret_value() if password is not None else ""
    return value or None
