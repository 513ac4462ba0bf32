#!/usr/bin/env bash
# The main job on the embedded default data.
source "$(dirname "$0")/_env.sh" cli,viz
stcsnn demo
