"""Cinder volume driver for shared LVM managed by sharedlvm-operator.

cinder.conf: volume_driver = sharedlvm_cinder.driver.SharedLVMDriver
"""
