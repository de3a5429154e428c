"""The dataset folder, the one input format: its declaration (`schema`), its one reader and its one writer.

Everything that reads or writes a dataset folder (training, evaluation, seeding, the event log, the
simulator, the importers) goes through these three modules, so the format is spelled out once.
"""
