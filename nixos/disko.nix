# Disk layout for a fresh install (disko): GPT, a 1 GiB EFI system partition on /boot, a 128 GiB
# root, and the rest of the disk for /srv.
#
# /srv gets its own filesystem so that the apps' data (photo uploads above all) can fill it up
# without taking the system down with it: with a full /srv the host still boots, rebuilds, logs
# and lets the owner in over SSH. The Kopia repository lives in /srv too: a full disk shows up
# as failed backups, loudly, not as a host that cannot start.
{ lib, ... }:

{
  disko.devices.disk.main = {
    type = "disk";
    device = lib.mkDefault "/dev/nvme0n1";
    content = {
      type = "gpt";
      partitions = {
        ESP = {
          size = "1G";
          type = "EF00";
          content = {
            type = "filesystem";
            format = "vfat";
            mountpoint = "/boot";
            mountOptions = [ "umask=0077" ];
          };
        };
        root = {
          size = "128G";
          content = {
            type = "filesystem";
            format = "ext4";
            mountpoint = "/";
          };
        };
        srv = {
          size = "100%";
          content = {
            type = "filesystem";
            format = "ext4";
            mountpoint = "/srv";
          };
        };
      };
    };
  };
}
