"""Deploying the routing statement set: Flink through the SQL Gateway, or Confluent Cloud statements.

See docs/deploy.md. ``cdcrouter deploy`` (``cdcrouter.cli.deploy_cmds``) is the user interface.
"""

from cdcrouter.deploy.cc_target import CloudDeployment
from cdcrouter.deploy.confluent_cloud import ConfluentCloudFlink
from cdcrouter.deploy.flink_target import FlinkDeployment, FlinkOptions
from cdcrouter.deploy.plan import Action, Plan, Script
from cdcrouter.deploy.sql_gateway import FlinkRest, SqlGateway, split_statements

__all__ = [
    "Action",
    "CloudDeployment",
    "ConfluentCloudFlink",
    "FlinkDeployment",
    "FlinkOptions",
    "FlinkRest",
    "Plan",
    "Script",
    "SqlGateway",
    "split_statements",
]
