"""Scoring and measuring models, shared by the commands (worker/tools) and the serving layer alike: metrics
(mAP as ultralytics scores it), agreement (two models' answers without labels), dataset (data yamls, label
files), gate (the accuracy gate), timing (percentiles, latency), host (the host line) and reports (table and
JSON). No argparse here: the commands parse, this package computes."""
