// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import "./Base.sol";

/// Paying out an order's escrow (contracts/settlement.py): content offers per hour on the usage summed over
/// every machine, each compute provider per hour for its own machine's share, fixed prices only on completion
/// (to the content offers and the machines the order ends on), the rest refunded. A deployment's machines are
/// paid for the seconds their endpoints served (deployments.py).
library Settlement {
    /// One machine the order ends on: the compute offer it runs under and the seconds it is paid for.
    struct Share {
        bytes8 offerId;
        uint256 usage;
    }

    /// Pay every offer for an order that ends now on the machines of ``current``, after the ``usageSeconds``
    /// of the machines it left; refund the rest of the escrow; the order's usage becomes the total.
    function settle(State storage s, Order storage order, Share[] memory current, bool completed) internal {
        uint256 total = order.usageSeconds;
        for (uint256 i = 0; i < current.length; i++) {
            total += current[i].usage;
        }
        bytes8[] memory content = Base.contentOffers(order);
        uint256 paid;
        for (uint256 i = 0; i < content.length; i++) {
            paid += _pay(s, order, content[i], total, completed);
        }
        Checkpoint[] storage checkpoints = s.checkpoints[order.id];
        uint256[] memory released = _released(checkpoints);
        for (uint256 i = 0; i < released.length; i++) {
            Checkpoint storage checkpoint = checkpoints[released[i]];
            paid += _pay(s, order, checkpoint.computeOffer, checkpoint.usageSeconds, false);
        }
        for (uint256 i = 0; i < current.length; i++) {
            paid += _pay(s, order, current[i].offerId, current[i].usage, completed);
        }
        if (order.escrow > paid) {
            Base.credit(s, order.owner, order.escrow - paid);
            emit Refund(Base.seq(s), order.id, order.owner, uint64(order.escrow - paid));
        }
        order.usageSeconds = uint64(total);
    }

    function close(State storage s, Order storage order, OrderState state) internal {
        order.state = state;
        order.escrow = 0;
        order.endedAt = Base.time();
        for (uint256 i = 0; i < order.machines.length; i++) {
            s.busy[order.machines[i]] -= 1;
        }
    }

    /// End the machine's endpoint now (if it published one) and return the seconds it served: from its
    /// registration to its removal, inside the lease window that opens with the deployment's first endpoint.
    function leave(State storage s, Order storage order, bytes8 machineId) internal returns (uint256) {
        uint256 index = s.endpointSlot[keccak256(abi.encode(order.id, machineId))];
        if (index == 0) return 0;
        Endpoint storage endpoint = s.endpoints[order.id][index - 1];
        if (endpoint.removedAt == NONE) endpoint.removedAt = Base.time();
        uint256 start = order.startedAt != NONE ? order.startedAt : endpoint.registeredAt;
        uint256 end = endpoint.removedAt;
        if (end > start + uint256(order.leaseHours) * 3600) end = start + uint256(order.leaseHours) * 3600;
        uint256 from = endpoint.registeredAt > start ? endpoint.registeredAt : start;
        return end > from ? end - from : 0;
    }

    /// Per-hour prices pro-rated by the second (floored), always; fixed in full, only on completion.
    function _pay(State storage s, Order storage order, bytes8 offerId, uint256 usage, bool completed)
        private
        returns (uint256 amount)
    {
        Offer storage offer = s.offers[offerId];
        Pricing storage pricing = offer.pricing;
        if (pricing.model == PricingModel.PerHour) {
            amount = uint256(pricing.amount) * usage / 3600;
        } else if (pricing.model == PricingModel.Fixed && completed) {
            amount = pricing.amount;
        }
        if (amount > 0) {
            Base.credit(s, offer.owner, amount);
            emit Payment(Base.seq(s), order.id, offer.owner, uint64(amount), offer.kind, offerId);
        }
    }

    /// Indexes of the released checkpoints, in machine id order (the order the Python contracts read them).
    function _released(Checkpoint[] storage checkpoints) private view returns (uint256[] memory found) {
        found = new uint256[](checkpoints.length);
        uint256 count;
        for (uint256 i = 0; i < checkpoints.length; i++) {
            if (!checkpoints[i].released) continue;
            bytes8 machineId = checkpoints[i].machineId;
            uint256 j = count++;
            while (j > 0 && checkpoints[found[j - 1]].machineId > machineId) {
                found[j] = found[j - 1];
                j--;
            }
            found[j] = i;
        }
        assembly {
            mstore(found, count)
        }
    }
}
