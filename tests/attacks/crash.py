# Appended to the reference model.py: the model component crashes while it is built.
def build_model(spec):  # noqa: F811 - replaces the reference function on purpose
    raise RuntimeError("boom from the model component")
