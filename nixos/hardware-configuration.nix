# The hardware of azalab-0 (Dell OptiPlex 7060: Intel 8th generation, SATA and M.2 NVMe, USB 3),
# in the form `nixos-generate-config --no-filesystems --show-hardware-config` writes (disko
# declares the file systems). deploy-rs builds the host from this repository, so the host's own
# /etc/nixos/hardware-configuration.nix must be the same: before the first deploy, compare it
# with this file on the host (`diff`) and commit the host's version here if they differ.
{ config, lib, ... }:

{
  boot.initrd.availableKernelModules = [ "xhci_pci" "ahci" "nvme" "usb_storage" "usbhid" "sd_mod" ];
  boot.initrd.kernelModules = [ ];
  boot.kernelModules = [ "kvm-intel" ];
  boot.extraModulePackages = [ ];
  hardware.cpu.intel.updateMicrocode = lib.mkDefault config.hardware.enableRedistributableFirmware;
}
