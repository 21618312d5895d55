"""Calls: live calls, statistics, one call with its timeline, and the call-record lists."""
