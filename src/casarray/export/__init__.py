"""Configurations for other load balancers, equivalent to a casarray config.

haproxy.py  haproxy.cfg (HAProxy 2.6 syntax) for HAProxy and pfSense users
"""
