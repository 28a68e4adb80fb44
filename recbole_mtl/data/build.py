"""Building a RecBole dataset with a clear error when its filters leave nothing (no plugin imports
beyond errors, so both validation and the text-feature builders can use it)."""

from __future__ import annotations

from recbole_mtl.errors import DataValidationError


def empty_dataset_error(config) -> DataValidationError:
    """The error for a dataset that RecBole's filters left empty, naming the filters."""
    keys = ("val_interval", "user_inter_num_interval", "item_inter_num_interval", "filter_inter_by_user_or_item",
            "rm_dup_inter")
    settings = ", ".join(f"{k}={config[k]!r}" for k in keys if config[k] not in (None, {}, "[0,inf)"))
    return DataValidationError(
        f"dataset '{config['dataset']}' has no interactions left after filtering"
        + (f" ({settings})" if settings else "")
        + ". Loosen the filters (e.g. --user_inter_num_interval='[0,inf)') or check the data."
    )


def build_dataset(config, create_dataset):
    """``create_dataset(config)``, turning RecBole's "Some feat is empty" into a clear error."""
    try:
        dataset = create_dataset(config)
    except ValueError as e:
        if "Some feat is empty" not in str(e):
            raise
        raise empty_dataset_error(config) from None
    if dataset.inter_num == 0:
        raise empty_dataset_error(config)
    return dataset
