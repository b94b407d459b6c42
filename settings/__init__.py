"""Env-based settings with profiles (local, test, production), and the live config store."""

from settings.config import Settings
from settings.live import LIVE_FIELDS, RESTART_FIELDS
from settings.loader import CONFIG_FILE_VAR, SettingsError, load_settings
from settings.metrics import ConfigFamilies, config_families
from settings.signals import install_reload_signal, remove_reload_signal
from settings.snapshot import RELOAD_RESULTS, ConfigSnapshot, ReloadOutcome, ReloadResult
from settings.store import Apply, Check, ConfigStore

__all__ = [
    "Apply",
    "CONFIG_FILE_VAR",
    "Check",
    "ConfigFamilies",
    "ConfigSnapshot",
    "ConfigStore",
    "LIVE_FIELDS",
    "RELOAD_RESULTS",
    "RESTART_FIELDS",
    "ReloadOutcome",
    "ReloadResult",
    "Settings",
    "SettingsError",
    "config_families",
    "install_reload_signal",
    "load_settings",
    "remove_reload_signal",
]
