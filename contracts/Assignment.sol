// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import "./Base.sol";

/// Which machines an order runs on (contracts/assignment.py), shared by order creation and fail-over: every
/// restriction checked, then a deterministic draw from the previous block hash.
library Assignment {
    /// Every machine sorted by id into eligible candidates (with their compute offer) and refusals; machines
    /// already tried for ``orderId`` (released checkpoints) are not candidates. A deployment (``serving``) takes
    /// only machines whose provider holds the serving stake too.
    function candidates(
        State storage s,
        bytes8 orderId,
        bytes8[] memory content,
        bytes8[] memory computes,
        bool serving
    ) internal view returns (Candidates memory found, Refused[] memory refusals) {
        found = Candidates(new bytes8[](s.machineIds.length), new bytes8[](s.machineIds.length), 0);
        refusals = new Refused[](s.machineIds.length);
        uint256 refused;
        for (uint256 i = 0; i < s.machineIds.length; i++) {
            bytes8 machineId = s.machineIds[i];
            (bool eligible, bytes8 offerId, Refusal reason) = tried(s, orderId, machineId)
                ? (false, bytes8(0), Refusal.Busy)
                : _judge(s, s.machines[machineId], content, computes, serving);
            if (eligible) {
                found.machineIds[found.count] = machineId;
                found.offerIds[found.count++] = offerId;
            } else {
                refusals[refused++] = Refused(reason, offerId);
            }
        }
        assembly {
            mstore(refusals, refused)
        }
        _sortById(found);
    }

    /// Whether the order already ran on (or was assigned to) the machine and moved off it.
    function tried(State storage s, bytes8 orderId, bytes8 machineId) internal view returns (bool) {
        uint256 slot = s.checkpointSlot[keccak256(abi.encode(orderId, machineId))];
        return slot != 0 && s.checkpoints[orderId][slot - 1].released;
    }

    /// Every active compute offer, in id order, whose terms accept the order; with ``like`` set, only those
    /// priced the same way at no more (so the escrow taken for ``like`` still covers).
    function accepting(State storage s, bytes32 engineDigest, uint64 leaseHours, bytes8 like)
        internal
        view
        returns (bytes8[] memory found)
    {
        found = new bytes8[](s.offerIds.length);
        uint256 count;
        Pricing storage ceiling = s.offers[like].pricing;
        for (uint256 i = 0; i < s.offerIds.length; i++) {
            Offer storage offer = s.offers[s.offerIds[i]];
            if (offer.kind != OfferKind.Compute || !offer.active || !_termsAllow(offer, engineDigest, leaseHours)) continue;
            if (like != bytes8(0) && (offer.pricing.model != ceiling.model || offer.pricing.amount > ceiling.amount)) {
                continue;
            }
            // Insertion in id order: the first covering offer in id order is the one a machine runs under.
            uint256 j = count++;
            while (j > 0 && found[j - 1] > offer.id) {
                found[j] = found[j - 1];
                j--;
            }
            found[j] = offer.id;
        }
        assembly {
            mstore(found, count)
        }
    }

    function containsDigest(bytes32[] storage digests, bytes32 digest) internal view returns (bool) {
        for (uint256 i = 0; i < digests.length; i++) {
            if (digests[i] == digest) return true;
        }
        return false;
    }

    /// Pick ``count`` candidates without replacement: draw i takes sha256(seed || i) mod remaining, with
    /// seed = sha256(randomness || "or-<id hex>"); with ``sameOffer`` (a fine-tune) picks after the first share
    /// its compute offer, else each keeps its own. Returns each pick's compute offer too.
    function draw(bytes32 randomness, bytes8 orderId, Candidates memory found, uint256 count, bool sameOffer)
        internal
        pure
        returns (bytes8[] memory picked, bytes8[] memory offers)
    {
        bytes32 seed = sha256(abi.encodePacked(randomness, "or-", _hex(orderId)));
        picked = new bytes8[](count);
        offers = new bytes8[](count);
        uint256 made;
        uint256 remaining = found.count;
        for (uint256 i = 0; i < count && remaining > 0; i++) {
            uint256 index = uint256(sha256(abi.encodePacked(seed, uint32(i)))) % remaining;
            (picked[made], offers[made]) = (found.machineIds[index], found.offerIds[index]);
            made++;
            uint256 kept;
            for (uint256 k = 0; k < remaining; k++) {
                if (k != index && (!sameOffer || found.offerIds[k] == offers[0])) {
                    (found.machineIds[kept], found.offerIds[kept]) = (found.machineIds[k], found.offerIds[k]);
                    kept++;
                }
            }
            remaining = kept;
        }
        assembly {
            mstore(picked, made)
            mstore(offers, made)
        }
    }

    function _termsAllow(Offer storage offer, bytes32 engineDigest, uint64 leaseHours) private view returns (bool) {
        Restrictions storage limits = offer.restrictions;
        if (limits.engineDigests.length > 0 && !containsDigest(limits.engineDigests, engineDigest)) return false;
        return limits.maxLeaseHours == 0 || leaseHours <= limits.maxLeaseHours;
    }

    /// The machine as a candidate (with its compute offer), or why it is not one.
    function _judge(
        State storage s,
        Machine storage machine,
        bytes8[] memory content,
        bytes8[] memory computes,
        bool serving
    ) private view returns (bool eligible, bytes8 offerId, Refusal reason) {
        if (!machine.active) return (false, 0, Refusal.Retired);
        uint64 last = machine.lastHeartbeat;
        if (Base.time() > last && Base.time() - last > s.params.heartbeatTimeout) return (false, 0, Refusal.Silent);
        if (s.busy[machine.id] > 0) return (false, 0, Refusal.Busy);
        uint64 stake = s.accounts[machine.provider].stake;
        if (serving && (stake < s.params.minProviderStake || stake < s.params.minServingStake)) {
            return (false, 0, Refusal.LowServingStake);
        }
        if (stake < s.params.minProviderStake) return (false, 0, Refusal.LowStake);
        for (uint256 i = 0; i < content.length; i++) {
            (bool allowed, Refusal why) = _placement(s.offers[content[i]], machine);
            if (!allowed) return (false, content[i], why);
        }
        bool covered;
        bytes8 firstOffer;
        Refusal firstReason;
        for (uint256 i = 0; i < computes.length; i++) {
            if (!Base.contains(s.offers[computes[i]].machineIds, machine.id)) continue;
            (bool allowed, Refusal why) = _placement(s.offers[computes[i]], machine);
            if (allowed) return (true, computes[i], Refusal.Retired);
            if (!covered) (covered, firstOffer, firstReason) = (true, computes[i], why);
        }
        return covered ? (false, firstOffer, firstReason) : (false, bytes8(0), Refusal.NotOffered);
    }

    /// Whether ``offer`` allows running on ``machine`` (platform, then region), and if not, why.
    function _placement(Offer storage offer, Machine storage machine) private view returns (bool, Refusal) {
        Restrictions storage limits = offer.restrictions;
        if (limits.platforms.length > 0 && !Base.containsText(limits.platforms, machine.platform)) {
            return (false, Refusal.Platform);
        }
        if (limits.regions.length > 0 && !Base.containsText(limits.regions, machine.region)) {
            return (false, Refusal.Region);
        }
        return (true, Refusal.Retired);
    }

    function _sortById(Candidates memory found) private pure {
        for (uint256 i = 1; i < found.count; i++) {
            (bytes8 machineId, bytes8 offerId) = (found.machineIds[i], found.offerIds[i]);
            uint256 j = i;
            while (j > 0 && found.machineIds[j - 1] > machineId) {
                (found.machineIds[j], found.offerIds[j]) = (found.machineIds[j - 1], found.offerIds[j - 1]);
                j--;
            }
            (found.machineIds[j], found.offerIds[j]) = (machineId, offerId);
        }
    }

    function _hex(bytes8 id) private pure returns (bytes memory text) {
        bytes16 digits = "0123456789abcdef";
        text = new bytes(16);
        for (uint256 i = 0; i < 8; i++) {
            text[2 * i] = digits[uint8(id[i]) >> 4];
            text[2 * i + 1] = digits[uint8(id[i]) & 0x0f];
        }
    }
}
