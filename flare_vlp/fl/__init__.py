"""The FLARE adapters (with ``flare_vlp.recipes``, the only code importing nvflare).

* ``flare_vlp.fl.controller.StrategyController``: the one server workflow; a method's strategy decides.
* ``flare_vlp.fl.executor.ClientAlgoExecutor``: the one site component; a method's client algorithm trains.
* ``flare_vlp.fl.exchange``: task + message <-> ``FLModel``.
* ``flare_vlp.fl.persistor.GlobalStatePersistor``: atomic per-round checkpoints of the strategy's state, resume.
* ``flare_vlp.fl.analytics``: live per-site metrics (analytics events -> TensorBoard + metrics.jsonl).
* ``flare_vlp.fl.policy``: the site class allow-list; ``flare_vlp.fl.provision``: the allow-list builder, POC project.
* ``flare_vlp.fl.poc`` / ``flare_vlp.fl.deploy``: the POC system's lifecycle; running a recipe in POC or prod.
* ``flare_vlp.fl.failure``: why a FLARE run failed, in one line (the ``failed`` record or a component's ERROR).
* ``flare_vlp.fl.dashboard``: the FLARE dashboard on loopback (gunicorn) and provisioning through its REST API.
* ``flare_vlp.fl.system``: a provisioned system started from its startup kits, stopped by PID.
"""
