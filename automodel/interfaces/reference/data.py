"""Reference data component: batched augmentation sized to the image and the device."""

from automodel.interfaces import DataRecipe, DataSpec, ops

INTERFACE_VERSION = 1

# Knobs the engineers turn.
AUGMENT = "auto"  # "auto" | "light" | "crop_flip" | "rrc" | "trivial"
HFLIP = True  # set False when left/right orientation carries the label
COLOR_AUG = True  # set False when colour carries the label
MIXUP = 0.0  # mixup alpha; 0 disables
CUTMIX = 0.0  # cutmix alpha; 0 disables
MIX_PROB = 0.5
ERASING = 0.0  # random-erasing probability
BALANCED_SAMPLING = False
TTA_HFLIP = False
INPUT_SIZE = 0  # 0 = chosen from the stored size and device
BATCH_SIZE = 0  # 0 = chosen from the device
FEATURES = ""  # e.g. "efficientnet_lite0@224": train a head on cached pretrained features ("" = images)


def choose_input_size(spec: DataSpec) -> int:
    if INPUT_SIZE:
        return INPUT_SIZE
    if spec.stored_size <= 64:
        return max(spec.stored_size, 28)
    return min(spec.stored_size, 224 if spec.device.startswith("cuda") else 128)


def build_data(spec: DataSpec) -> DataRecipe:
    size = choose_input_size(spec)
    out_chans = 3 if size > 64 else spec.in_chans
    mean, std = spec.mean, spec.std
    mode = AUGMENT
    if mode == "auto":
        mode = "crop_flip" if size <= 64 else "rrc"

    def train_transform(x):
        if mode == "trivial":
            x = ops.trivial_augment(x, color=COLOR_AUG)
        x = ops.to_float(x, mean, std, out_chans)
        if mode in ("rrc", "trivial"):
            x = ops.random_resized_crop_flip(x, size, hflip=HFLIP)
        else:
            x = ops.resize(x, size)
            if mode == "crop_flip":
                x = ops.random_crop_flip(x, pad=max(size // 8, 1), hflip=HFLIP)
        if ERASING:
            x = ops.random_erasing(x, p=ERASING)
        return x

    def eval_transform(x):
        return ops.resize(ops.to_float(x, mean, std, out_chans), size)

    mix = ops.mixup_cutmix(mixup_alpha=MIXUP, cutmix_alpha=CUTMIX, prob=MIX_PROB) if (MIXUP or CUTMIX) else None
    batch = BATCH_SIZE or (128 if spec.device.startswith("cuda") else 64)
    return DataRecipe(
        input_size=size,
        batch_size=min(batch, max(spec.num_train // 4, 8)),
        train_transform=train_transform,
        eval_transform=eval_transform,
        out_chans=out_chans,
        batch_mix=mix,
        balanced_sampling=BALANCED_SAMPLING,
        tta_hflip=TTA_HFLIP,
        features=FEATURES or None,
        feature_flip=HFLIP,
    )
