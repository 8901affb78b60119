"""Naive one-shot data component: what an LLM writes when asked once for "a model for N classes".

Images at their stored size, scaled to [0, 1] and normalised with 0.5/0.5, no augmentation,
batch 32. Not tuned to the dataset in any way.
"""

from automodel.interfaces import DataRecipe, DataSpec

INTERFACE_VERSION = 1


def build_data(spec: DataSpec) -> DataRecipe:
    def transform(x):
        return (x.float() / 255.0 - 0.5) / 0.5

    return DataRecipe(
        input_size=spec.stored_size,
        batch_size=32,
        train_transform=transform,
        eval_transform=transform,
        out_chans=spec.in_chans,
    )
