"""The FLARE recipe of every registered method: a ``FedJob`` with the strategy controller + persistor + analytics
receiver on the server and the client-algorithm executor at every site, using the INSTALLED flare_vlp (no
``custom/`` copy).

What differs between methods comes from the registry (:mod:`flare_vlp.methods.registry`): the method's typed config
(validated here, so a bad setting fails before a job is submitted), its roles and their client algorithms. Per-site
roles give each site its own executor (its own app in ``meta.json``'s deploy map), with the role's config overrides
(e.g. another image encoder) and options; ``device`` may also be given per site.

Example:
    >>> from nvflare.recipe import SimEnv
    >>> spec = RunSpec(method, method_settings=settings, config="tiny", min_clients=2,
    ...                data=DataSource(data_dir="data/synth"))  # method: a registered name, settings: its config
    >>> MethodRecipe(spec).run(SimEnv(num_clients=2, workspace_root="/tmp/ws")).get_result()  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from nvflare.apis.analytix import ANALYTIC_EVENT_TYPE
from nvflare.app_common.widgets.convert_to_fed_event import ConvertToFedEvent
from nvflare.job_config.api import FedJob
from nvflare.recipe.poc_env import PocEnv
from nvflare.recipe.sim_env import SimEnv
from nvflare.recipe.spec import ExecEnv, Recipe

from flare_vlp.fl.analytics import VLPAnalyticsReceiver
from flare_vlp.fl.controller import StrategyController
from flare_vlp.fl.executor import ClientAlgoExecutor
from flare_vlp.fl.persistor import GlobalStatePersistor
from flare_vlp.fl.poc import prepare_poc_env
from flare_vlp.fl.policy import allow_flare_vlp
from flare_vlp.methods.data_source import job_path
from flare_vlp.methods.registry import DEFAULT_ROLE, get_method
from flare_vlp.methods.run_spec import DataSource, RunSpec

__all__ = ["DataSource", "MethodRecipe", "RunSpec"]


class MethodRecipe(Recipe):
    """The run ``spec`` of a registered method as a FLARE job.

    The server gets the strategy controller, the global-state persistor and the analytics receiver; the sites get
    the client-algorithm executor, each with ``spec.to_dict()``. Sites with different roles or devices get their
    own app (``meta.json``'s deploy map); otherwise one app serves every client of the environment.

    Args:
        spec: the run (:class:`~flare_vlp.methods.run_spec.RunSpec`); checked before the job is built
            (:meth:`~flare_vlp.methods.run_spec.RunSpec.validate`). A multi-role method needs its ``roles``
            (or ``sites`` to place its default roles on), and ``min_clients`` or ``sites`` is needed.
        name: job name (also the exported folder name); default: the method's job name (e.g. ``feddra_vlp``).
        run_dir: server folder for metrics.jsonl and the final global model (default: the server's app folder).
        resume_from: a persisted global state (``FL_global_model.pt``) to continue from.

    Raises:
        ValueError / ConfigError: what :meth:`RunSpec.validate` refuses, a multi-role method without roles, or no
            ``min_clients``.
    """

    def __init__(
        self,
        spec: RunSpec,
        *,
        name: str | None = None,
        run_dir: str | Path | None = None,
        resume_from: str | Path | None = None,
    ):
        method = get_method(spec.method)
        spec.validate()
        if spec.roles is None and set(method.roles) != {DEFAULT_ROLE}:
            raise ValueError(
                f"method {spec.method!r} has site roles {sorted(method.roles)}: give `roles` (site -> role), or "
                f"`sites` to place its default roles on"
            )
        if spec.min_clients is None:
            raise ValueError(f"{spec.method} recipe: give `min_clients` or `sites`")
        self.method = spec.method
        self.spec = spec
        name = name or method.job_name
        plain = spec.to_dict()
        run_path = job_path(run_dir) if run_dir is not None else None
        resume = job_path(resume_from) if resume_from is not None else None

        job = FedJob(name=name, min_clients=spec.min_clients)
        job.set_app_packages(["flare_vlp"])
        job.to_server(GlobalStatePersistor(spec.config, resume_from=resume), id="persistor")
        job.to_server(StrategyController(plain, run_dir=run_path))
        # live per-site metrics: the sites' analytics events go to the server as fed events (flare_vlp.fl.analytics)
        job.to_server(VLPAnalyticsReceiver(run_dir=run_path), id="analytics_receiver")
        to_fed = ConvertToFedEvent(events_to_convert=[ANALYTIC_EVENT_TYPE], fed_event_prefix="fed.")
        if spec.roles or isinstance(spec.device, dict):
            for site in spec.sites:
                job.to(ClientAlgoExecutor(plain, role=spec.role_of(site), store_name=name), site)
                job.to(to_fed, site, id="event_to_fed")
        else:
            job.to_clients(ClientAlgoExecutor(plain, store_name=name))
            job.to_clients(to_fed, id="event_to_fed")
        super().__init__(job)

    def process_env(self, env: ExecEnv) -> None:
        """Allow flare_vlp components at every site of the environment (see :mod:`flare_vlp.fl.policy`).

        SimEnv: the job's simulator workspace. PocEnv: it provisions afresh on deploy, so it gets flare_vlp's
        project.yml (loopback server, allow-list builder; :func:`flare_vlp.fl.poc.prepare_poc_env`). ProdEnv: the
        sites are remote; each runs ``flare-vlp jobs allow <startup kit>/local`` once.
        """
        if isinstance(env, SimEnv):
            allow_flare_vlp(Path(env.workspace_root) / self.name / "local")
        elif isinstance(env, PocEnv):
            prepare_poc_env(env)
