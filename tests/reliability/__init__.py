"""Reliability and security suite (issue 8): kills, full disks, concurrent runs, bad inputs, unsafe files."""
