"""Configuration files of nnunet-quantif, installed as the ``nnunet_quantif.configs`` package.

Read them through :func:`nnunet_quantif.config.config_path` / :func:`nnunet_quantif.config.load_json_config`.
"""
