"""The job presets (Hydra YAML), installed with the package as `rlsys.configs`."""
