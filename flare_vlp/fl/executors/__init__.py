"""FLARE executors (client-side components named by class path in ``config_fed_client.json``)."""

from flare_vlp.fl.executors.site_data import SiteData, SiteDataError, load_site_data
from flare_vlp.fl.executors.vlp_executor import VLPExecutor

__all__ = ["VLPExecutor", "SiteData", "SiteDataError", "load_site_data"]
