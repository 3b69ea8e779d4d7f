#!/usr/bin/env python3
"""Validates Pinhole's JSON outputs against the published schemas with the independent
`jsonschema` package (Draft 2020-12), so that a report and its schema cannot drift apart
unnoticed by a consumer that validates.

Usage: schema_check.py SCHEMA_DIR NAME=FILE [NAME=FILE ...]
  NAME: a schema in SCHEMA_DIR (NAME.schema.json); FILE: a JSON document ("-": stdin).
Prints {"validated": [[NAME, FILE], ...]} on success; exits 1 listing every error.
"""
import json
import os
import sys

from jsonschema import Draft202012Validator


def main():
    schema_dir, pairs = sys.argv[1], sys.argv[2:]
    if not pairs:
        sys.exit("nothing to validate")
    errors, validated = [], []
    for pair in pairs:
        name, path = pair.split("=", 1)
        with open(os.path.join(schema_dir, name + ".schema.json")) as f:
            schema = json.load(f)
        Draft202012Validator.check_schema(schema)
        with (sys.stdin if path == "-" else open(path)) as f:
            document = json.load(f)
        for e in Draft202012Validator(schema).iter_errors(document):
            where = "/".join(str(p) for p in e.absolute_path)
            errors.append(f"{path} ({name}): at /{where}: {e.message[:300]}")
        validated.append([name, path])
    if errors:
        sys.exit("\n".join(errors))
    print(json.dumps({"validated": validated}))


if __name__ == "__main__":
    main()
