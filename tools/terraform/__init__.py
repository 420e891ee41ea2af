"""Offline checks for ``terraform/``: fmt, validate, test and checkov, with no provider download.

The google provider cannot be installed here, so ``terraform validate`` and ``terraform test``
run against a schema-only stand-in for it (``standin_provider.py``), served under
``dev_overrides`` from a temporary CLI configuration. Its schema is a subset of google
provider 6.50 generated from the npm package ``@cdktf/provider-google`` (``schema.py``)
and kept in the repository (``google-provider-schema.json``).

    python -m tools.terraform.check            # everything `make terraform-check` runs
    python -m tools.terraform.schema           # regenerate the schema subset
"""
