"""Configurations for other load balancers, equivalent to a casarray config.

haproxy.py  haproxy.cfg (HAProxy 2.6 syntax) for HAProxy and pfSense users
keepalived.py  keepalived.conf (keepalived 2.2) that holds the VIP for a pair of casarray hosts
bird.py  bird.conf (BIRD 2) that announces the VIP by BGP from every healthy node (active/active, ECMP)
"""
