// camwatch firmware rules: flash-erase and remote-bricking primitives.
//
// Every updater needs to erase and write flash, so a primitive alone is only "info". The inspector
// raises a separate high finding (CW-FW-BRICK-900, "remote-bricking capable") when the same image
// also holds a network-reachable upgrade handler (rules with role network_upgrade/cloud_upgrade).
// Rules with role "bricking" feed that correlation.
// Meta fields: see docs/writing-rules.md. Catalogue IDs: shared/reference/indicators.md.

rule cw_brick_001_mtd_utilities
{
    meta:
        id = "CW-FW-BRICK-001"
        severity = "info"
        vendor = "generic"
        cve = ""
        reference = "indicators.md GEN-06 (grade.sh in binwalk tests/inputs/zip.bin: erase_cmd=flash_eraseall, write_cmd=nandwrite)"
        description = "Flash erase/write command (flash_eraseall, flash_erase, flashcp, nandwrite) used by a script or program"
        category = "bricking"
        indicator = "GEN-06"
        role = "bricking"
        reliability = 90
    strings:
        $erase_dev = /flash_erase(all)?[ \t]+(-[a-zA-Z]+[ \t]+)*(\/dev\/|\$)/
        $write_dev = /(nandwrite|flashcp)[ \t][^\n\x00]{0,80}(\/dev\/|\$)/
        $script = /(^|\n)[^\n#]{0,80}\b(flash_eraseall|flash_erase|flashcp|nandwrite)\b/
    condition:
        $erase_dev or $write_dev or ($script and not (uint32(0) == 0x464c457f))
}

rule cw_brick_002_openwrt_mtd
{
    meta:
        id = "CW-FW-BRICK-002"
        severity = "info"
        vendor = "generic"
        cve = ""
        reference = "indicators.md GEN-06 (mtd -r write, mtd erase)"
        description = "OpenWrt-style mtd write/erase command"
        category = "bricking"
        indicator = "GEN-06"
        role = "bricking"
        reliability = 80
    strings:
        $mtd = /(^|[\n;&|`"( \t\x00])mtd[ \t]+(-[a-zA-Z][ \t]+)*(write|erase)[ \t]/
    condition:
        $mtd
}

rule cw_brick_003_raw_partition_write
{
    meta:
        id = "CW-FW-BRICK-003"
        severity = "info"
        vendor = "generic"
        cve = ""
        reference = "indicators.md GEN-06 (dd if=$file_name of=/dev/$partition in grade.sh; dd if=/dev/zero of=/dev/mmcblk)"
        description = "dd writes straight to a flash/eMMC device (raw partition write or wipe)"
        category = "bricking"
        indicator = "GEN-06"
        role = "bricking"
        reliability = 80
    strings:
        $dd = /\bdd[ \t]+[^\n\x00]{0,100}of=\/dev\/(mtd|mmcblk|\$)/
    condition:
        $dd
}

rule cw_brick_004_destructive_wipe
{
    meta:
        id = "CW-FW-BRICK-004"
        severity = "high"
        vendor = "generic"
        cve = ""
        reference = "indicators.md GEN-06, GEN-07 (cat /dev/urandom > /dev/mtd; fdisk -C 1 -H 1 -S 1 /dev/mtd; BrickerBot)"
        description = "Destructive flash write with no update purpose (random data to /dev/mtd*/mmc*, geometry corruption): permanent denial of service"
        category = "bricking"
        indicator = "GEN-07"
        role = "bricking"
        reliability = 80
    strings:
        $urandom = /cat[ \t]+\/dev\/urandom[ \t]*>[ \t]*\/dev\/(mtd|mmc)/
        $fdisk = /fdisk[ \t]+-C[ \t]*1[ \t]+-H[ \t]*1[ \t]+-S[ \t]*1[ \t]+\/dev\/(mtd|mmc)/
    condition:
        any of them
}

rule cw_brick_005_brickerbot_sequence
{
    meta:
        id = "CW-FW-BRICK-005"
        severity = "high"
        vendor = "generic"
        cve = ""
        reference = "indicators.md GEN-07 (BrickerBot, unconfirmed command strings from coverage of Radware's report)"
        description = "BrickerBot-style permanent-DoS command sequence (kernel tuning to break networking, default route removal)"
        category = "bricking"
        indicator = "GEN-07"
        role = "bricking"
        reliability = 50
    strings:
        $ts = "net.ipv4.tcp_timestamps=0" ascii
        $threads = "kernel.threads-max=1" ascii
        $route = "route del default" ascii
        $urandom = /\/dev\/urandom[ \t]*>[ \t]*\/dev\/(mtd|mmc)/
    condition:
        2 of them
}

rule cw_brick_006_uboot_flash_commands
{
    meta:
        id = "CW-FW-BRICK-006"
        severity = "info"
        vendor = "generic"
        cve = ""
        reference = "indicators.md GEN-06 (sf erase, flwrite in U-Boot environments and TFTP scripts)"
        description = "U-Boot flash erase/write commands in an environment or TFTP script"
        category = "bricking"
        indicator = "GEN-06"
        role = "bricking"
        reliability = 70
    strings:
        $sf = /(^|[\n;=\x00 ])sf[ \t]+erase[ \t]+(0x)?[0-9a-fA-F$]/
        $flwrite = /(^|[\n;=\x00 ])flwrite([ \t;\n\x00]|$)/
    condition:
        any of them
}
