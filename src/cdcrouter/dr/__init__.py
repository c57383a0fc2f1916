"""Disaster recovery: a second Kafka region by MirrorMaker 2, failover, backups and drills.

One module per concern (``mirror``: the MM2 process and its config; ``status``: replication
lag per topic and consumer group; others add failover, backups and drills). Their commands
hang off the shared ``cdcrouter dr`` group (:func:`cdcrouter.cli.dr_cmds.dr_group`).
"""
