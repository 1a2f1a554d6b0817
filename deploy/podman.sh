#!/bin/sh
# podman as this project runs it on hosts without systemd and with hybrid cgroups:
# runc (crun fails there), cgroupfs, and ulimits the kernel accepts.
exec podman --runtime /usr/sbin/runc --cgroup-manager=cgroupfs "$@"
