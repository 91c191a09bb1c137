#!/usr/bin/env python3
"""Re-drives the asynchronous ingest invocations that failed every attempt.

Each message of the stack's IngestFailureQueue is Lambda's on-failure record of an
asynchronous invocation of the ingest function (after its two retries); its
`requestPayload` is the payload that invocation carried. This invokes the function
again, synchronously, with that payload, and deletes the message only when the new
invocation succeeded: one that fails again stays in the queue, and is reported. Events
already accepted are deduplicated by their ids, so a payload re-driven twice queues
each delivery once.

    make redrive-ingest [STACK=herald]
    .venv/bin/python infra/redrive-ingest.py [--stack NAME] [--region REGION] [--dry-run]

The stack name and region default to samconfig.toml's (stack_name, region), then to
"herald" and the AWS configuration's region.
"""

import argparse
import json
import sys
import tomllib

import boto3


def samconfig():
    try:
        with open("samconfig.toml", "rb") as f:
            default = tomllib.load(f).get("default", {})
    except FileNotFoundError:
        return None, None
    stack = default.get("global", {}).get("parameters", {}).get("stack_name")
    region = default.get("deploy", {}).get("parameters", {}).get("region")
    return stack, region


def main():
    saved_stack, saved_region = samconfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", default=saved_stack or "herald")
    parser.add_argument("--region", default=saved_region)
    parser.add_argument("--dry-run", action="store_true", help="list, invoke nothing")
    args = parser.parse_args()

    session = boto3.Session(region_name=args.region)
    stack = session.client("cloudformation").describe_stacks(StackName=args.stack)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    queue_url = outputs["IngestFailureQueueUrl"]
    function = outputs["IngestFunctionArn"]
    sqs = session.client("sqs")
    lam = session.client("lambda")

    seen, redriven, failed = set(), 0, 0
    while True:
        messages = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            # Long enough to invoke; a message that fails again comes back after it.
            VisibilityTimeout=120,
        ).get("Messages", [])
        fresh = [m for m in messages if m["MessageId"] not in seen]
        if not fresh:
            break
        for m in fresh:
            seen.add(m["MessageId"])
            try:
                record = json.loads(m["Body"])
                payload = record["requestPayload"]
            except (ValueError, KeyError, TypeError):
                print(f"{m['MessageId']}: not an on-failure record with a requestPayload; left in the queue")
                failed += 1
                continue
            condition = record.get("requestContext", {}).get("condition", "?")
            if args.dry_run:
                print(f"{m['MessageId']}: failed ({condition}); would invoke {function}")
                continue
            answer = lam.invoke(
                FunctionName=function,
                InvocationType="RequestResponse",
                Payload=json.dumps(payload).encode(),
            )
            body = answer["Payload"].read().decode(errors="replace")
            if answer.get("FunctionError"):
                print(f"{m['MessageId']}: failed again, left in the queue: {body[:500]}")
                failed += 1
                continue
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
            redriven += 1
    print(f"re-driven: {redriven}; left in the queue: {failed}; seen: {len(seen)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
