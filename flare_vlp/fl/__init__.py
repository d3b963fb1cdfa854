"""The FLARE plugins: the only flare_vlp package that imports nvflare.

* ``flare_vlp.fl.executors.VLPExecutor``: the site component (train / validate / submit_model tasks).
* ``flare_vlp.fl.controllers.FedAvgVLP`` / ``FedProxVLP``: server workflows over a shared round skeleton.
* ``flare_vlp.fl.persistor.VLPModelPersistor``: seeded initial model, atomic saves, resume.
* ``flare_vlp.fl.job_export``: site policy (class allow-list) and job export helpers.
* ``flare_vlp.fl.provision``: the allow-list provisioning builder and flare_vlp's loopback POC project.
* ``flare_vlp.fl.poc`` / ``flare_vlp.fl.deploy``: the POC system's lifecycle; running a recipe in POC or prod.
"""
