"""Run directories: atomic writing and loading (`directory`), the typed run record (`record`) with
its schema version and migrations (`migrate`), rank-0-only writing under torchrun (`distributed`),
and in-place updates of a finished run (`update`).
"""
