// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import "./Base.sol";

/// Orders: creation with escrow and assignment, key grants, the run, and settlement or refund
/// (contracts/orders.py and contracts/assignment.py).
library Orders {
    /// Check every offer's terms, assign machines, escrow a deposit that covers the worst-case price.
    function createOrder(State storage s, uint64 nonce, bytes32 txHash, OrderInput calldata input) external {
        bytes20 sender = Base.begin(s, nonce);
        _checkOrder(input);
        bytes8 orderId = Base.newId(txHash);
        if (s.orders[orderId].owner != bytes20(0)) revert IdTaken(orderId);
        bytes8[] memory content = _contentOffers(s, input);
        if (input.hasComputeOffer) _offerOfKind(s, input.computeOffer, OfferKind.Compute);
        bytes32 engineDigest = s.offers[input.engineOffer].contentDigest;
        for (uint256 i = 0; i < content.length; i++) {
            _checkTerms(s.offers[content[i]], engineDigest, input.leaseHours);
        }
        if (input.hasComputeOffer) _checkTerms(s.offers[input.computeOffer], engineDigest, input.leaseHours);
        (bytes8[] memory picked, bytes8 chosen) = _assign(s, orderId, content, input, engineDigest);
        uint256 required = _deposit(s.offers[chosen].pricing, input.leaseHours, input.replicas);
        for (uint256 i = 0; i < content.length; i++) {
            required += _deposit(s.offers[content[i]].pricing, input.leaseHours, input.replicas);
        }
        if (input.deposit < required) revert DepositTooLow(input.deposit, required);
        Base.debit(s, sender, input.deposit, FOR_DEPOSIT);
        Order storage order = s.orders[orderId];
        order.id = orderId;
        order.owner = sender;
        order.kind = input.kind;
        order.state = OrderState.PendingGrants;
        order.modelOffer = input.modelOffer;
        order.engineOffer = input.engineOffer;
        order.computeOffer = chosen;
        order.leaseHours = input.leaseHours;
        order.replicas = input.replicas;
        order.deposit = input.deposit;
        order.escrow = input.deposit;
        order.createdAt = Base.time();
        order.startedAt = NONE;
        order.endedAt = NONE;
        order.datasetOffers = input.datasetOffers;
        order.machines = picked;
        order.params = input.params;
        s.orderIds.push(orderId);
        for (uint256 i = 0; i < picked.length; i++) {
            s.busy[picked[i]] += 1;
        }
        emit OrderCreated(Base.seq(s), orderId, sender, input.deposit, required);
        emit OrderAssigned(Base.seq(s), orderId, picked, chosen);
    }

    function postGrant(State storage s, uint64 nonce, bytes8 orderId, bytes8 offerId, bytes8 machineId, bytes calldata sealedKey)
        external
    {
        bytes20 sender = Base.begin(s, nonce);
        if (sealedKey.length == 0 || sealedKey.length > MAX_SEALED_KEY) revert BadField("sealed_key");
        Order storage order = Base.order(s, orderId);
        bytes32 key = _grantTarget(s, order, offerId, machineId, sender);
        if (s.granted[key]) revert GrantExists(offerId, machineId);
        s.granted[key] = true;
        s.grants[orderId].push(Grant(offerId, machineId, sender, Base.time(), sealedKey));
        emit GrantPosted(Base.seq(s), orderId, offerId, machineId);
        if (s.grants[orderId].length == (order.datasetOffers.length + 2) * order.machines.length) {
            order.state = OrderState.Ready;
            emit OrderReady(Base.seq(s), orderId, order.machines);
        }
    }

    /// Record the owner's refusal; the order keeps waiting (its owner may cancel for a full refund).
    function refuseGrant(State storage s, uint64 nonce, bytes8 orderId, bytes8 offerId, bytes8 machineId, string calldata reason)
        external
    {
        bytes20 sender = Base.begin(s, nonce);
        Base.text(reason, MAX_REASON, false, "reason");
        Order storage order = Base.order(s, orderId);
        bytes32 key = _grantTarget(s, order, offerId, machineId, sender);
        if (s.granted[key]) revert AlreadyGranted(offerId, machineId);
        if (s.refused[key]) revert RefusalExists(offerId, machineId);
        s.refused[key] = true;
        s.refusals[orderId].push(KeyRefusal(offerId, machineId, sender, Base.time(), reason));
        emit GrantRefused(Base.seq(s), orderId, offerId, machineId, reason);
    }

    function startOrder(State storage s, uint64 nonce, bytes8 orderId, bytes8 machineId) external {
        bytes20 sender = Base.begin(s, nonce);
        Order storage order = Base.order(s, orderId);
        _assignee(s, order, machineId, sender);
        _requireState(order, WHEN_STARTING);
        order.state = OrderState.Running;
        order.startedAt = Base.time();
        emit OrderStarted(Base.seq(s), orderId, machineId);
    }

    /// Settle: each offer is paid by its pricing for the metered time, the order owner gets the rest back.
    function completeOrder(State storage s, uint64 nonce, bytes8 orderId, bytes8 machineId, uint64 usageSeconds, bytes32 report)
        external
    {
        bytes20 sender = Base.begin(s, nonce);
        if (usageSeconds > MAX_AMOUNT) revert BadField("usage_seconds");
        Order storage order = Base.order(s, orderId);
        _assignee(s, order, machineId, sender);
        _requireState(order, WHEN_COMPLETING);
        uint256 lease = uint256(order.leaseHours) * 3600;
        uint64 usage = usageSeconds < lease ? usageSeconds : uint64(lease);
        uint256 paid = _pay(s, order, order.modelOffer, usage);
        for (uint256 i = 0; i < order.datasetOffers.length; i++) {
            paid += _pay(s, order, order.datasetOffers[i], usage);
        }
        paid += _pay(s, order, order.engineOffer, usage);
        paid += _pay(s, order, order.computeOffer, usage);
        _refund(s, order, order.escrow - paid);
        _close(s, order, OrderState.Completed);
        order.usageSeconds = usage;
        order.reportDigest = report;
        emit OrderCompleted(Base.seq(s), orderId, usage, report);
    }

    /// A provider gives up on an order: nothing is paid, the whole escrow goes back.
    function failOrder(State storage s, uint64 nonce, bytes8 orderId, bytes8 machineId, string calldata reason) external {
        bytes20 sender = Base.begin(s, nonce);
        Base.text(reason, MAX_TEXT, false, "reason");
        Order storage order = Base.order(s, orderId);
        _assignee(s, order, machineId, sender);
        _requireState(order, WHEN_FAILING);
        _refund(s, order, order.escrow);
        _close(s, order, OrderState.Failed);
        order.failureReason = reason;
        emit OrderFailed(Base.seq(s), orderId, machineId, reason);
    }

    /// The owner withdraws an order that has not started: the whole escrow goes back.
    function cancelOrder(State storage s, uint64 nonce, bytes8 orderId) external {
        bytes20 sender = Base.begin(s, nonce);
        Order storage order = Base.order(s, orderId);
        if (order.owner != sender) revert NotOrderOwner(orderId, order.owner);
        _requireState(order, WHEN_CANCELLING);
        _refund(s, order, order.escrow);
        _close(s, order, OrderState.Cancelled);
        emit OrderCancelled(Base.seq(s), orderId);
    }

    // --- checks --------------------------------------------------------------------------------------------

    function _checkOrder(OrderInput calldata input) private pure {
        if (input.datasetOffers.length == 0) revert BadField("dataset_offers");
        Base.distinct(input.datasetOffers, "dataset_offers");
        if (input.params.length > MAX_PARAMS) revert BadField("params");
        if (input.leaseHours < 1 || input.leaseHours > MAX_LEASE_HOURS) revert BadField("lease_hours");
        if (input.replicas != 1) revert BadField("replicas");
        if (input.deposit > MAX_AMOUNT) revert BadField("deposit");
    }

    /// The content offers in the order the contract reads them: model, datasets…, engine.
    function _contentOffers(State storage s, OrderInput calldata input) private view returns (bytes8[] memory content) {
        content = new bytes8[](input.datasetOffers.length + 2);
        content[0] = _offerOfKind(s, input.modelOffer, OfferKind.Model).id;
        for (uint256 i = 0; i < input.datasetOffers.length; i++) {
            content[i + 1] = _offerOfKind(s, input.datasetOffers[i], OfferKind.Dataset).id;
        }
        content[content.length - 1] = _offerOfKind(s, input.engineOffer, OfferKind.Engine).id;
    }

    function _offerOfKind(State storage s, bytes8 offerId, OfferKind kind) private view returns (Offer storage offer) {
        offer = Base.offer(s, offerId);
        if (offer.kind != kind) revert WrongOfferKind(offerId, offer.kind, kind);
        if (!offer.active) revert OfferRetired(kind, offerId);
    }

    function _termsAllow(Offer storage offer, bytes32 engineDigest, uint64 leaseHours) private view returns (bool) {
        Restrictions storage limits = offer.restrictions;
        if (limits.engineDigests.length > 0 && !_containsDigest(limits.engineDigests, engineDigest)) return false;
        return limits.maxLeaseHours == 0 || leaseHours <= limits.maxLeaseHours;
    }

    function _checkTerms(Offer storage offer, bytes32 engineDigest, uint64 leaseHours) private view {
        Restrictions storage limits = offer.restrictions;
        if (limits.engineDigests.length > 0 && !_containsDigest(limits.engineDigests, engineDigest)) {
            revert EngineNotAllowed(offer.kind, offer.id, engineDigest);
        }
        if (limits.maxLeaseHours != 0 && leaseHours > limits.maxLeaseHours) {
            revert LeaseTooLong(offer.kind, offer.id, limits.maxLeaseHours, leaseHours);
        }
    }

    function _containsDigest(bytes32[] storage digests, bytes32 digest) private view returns (bool) {
        for (uint256 i = 0; i < digests.length; i++) {
            if (digests[i] == digest) return true;
        }
        return false;
    }

    /// Only the owner of one of the order's content offers decides on its key, for an assigned machine, while
    /// the order waits for grants; returns the (order, offer, machine) key of that decision.
    function _grantTarget(State storage s, Order storage order, bytes8 offerId, bytes8 machineId, bytes20 sender)
        private
        view
        returns (bytes32)
    {
        Offer storage offer = Base.offer(s, offerId);
        if (offerId != order.modelOffer && offerId != order.engineOffer && !Base.contains(order.datasetOffers, offerId)) {
            revert OfferNotInOrder(offerId, order.id);
        }
        if (offer.owner != sender) revert NotOfferOwner(TO_GRANT, offerId, offer.owner);
        if (!Base.contains(order.machines, machineId)) revert MachineNotAssigned(TO_GRANT, machineId, order.id);
        _requireState(order, WHEN_GRANTING);
        return keccak256(abi.encode(order.id, offerId, machineId));
    }

    function _requireState(Order storage order, uint8 action) private view {
        OrderState state = order.state;
        bool allowed = action == WHEN_GRANTING
            ? state == OrderState.PendingGrants
            : action == WHEN_STARTING
                ? state == OrderState.Ready
                : action == WHEN_COMPLETING
                    ? state == OrderState.Running
                    : action == WHEN_FAILING
                        ? state <= OrderState.Running
                        : state <= OrderState.Ready;
        if (!allowed) revert WrongOrderState(order.id, state, action);
    }

    /// The assigned machine the sender provides: only it may report on the order.
    function _assignee(State storage s, Order storage order, bytes8 machineId, bytes20 sender) private view {
        if (!Base.contains(order.machines, machineId)) revert MachineNotAssigned(TO_REPORT, machineId, order.id);
        Base.providedMachine(s, machineId, sender);
    }

    // --- money ---------------------------------------------------------------------------------------------

    /// The most an order can owe an offer: what it must escrow up front.
    function _deposit(Pricing storage pricing, uint256 leaseHours, uint256 replicas) private view returns (uint256) {
        if (pricing.model == PricingModel.PerHour) return uint256(pricing.amount) * leaseHours * replicas;
        return pricing.model == PricingModel.Fixed ? pricing.amount : 0;
    }

    /// Per-hour prices pro-rated by the second (floored), fixed in full.
    function _pay(State storage s, Order storage order, bytes8 offerId, uint256 usage) private returns (uint256 amount) {
        Offer storage offer = s.offers[offerId];
        Pricing storage pricing = offer.pricing;
        if (pricing.model == PricingModel.PerHour) {
            amount = uint256(pricing.amount) * usage / 3600 * order.replicas;
        } else if (pricing.model == PricingModel.Fixed) {
            amount = pricing.amount;
        }
        if (amount > 0) {
            Base.credit(s, offer.owner, amount);
            emit Payment(Base.seq(s), order.id, offer.owner, uint64(amount), offer.kind, offerId);
        }
    }

    function _refund(State storage s, Order storage order, uint256 amount) private {
        if (amount > 0) {
            Base.credit(s, order.owner, amount);
            emit Refund(Base.seq(s), order.id, order.owner, uint64(amount));
        }
    }

    function _close(State storage s, Order storage order, OrderState state) private {
        order.state = state;
        order.escrow = 0;
        order.endedAt = Base.time();
        for (uint256 i = 0; i < order.machines.length; i++) {
            s.busy[order.machines[i]] -= 1;
        }
    }

    // --- assignment ----------------------------------------------------------------------------------------

    /// The machines (and compute offer) an order gets, or NoEligibleMachine with every refusal.
    function _assign(State storage s, bytes8 orderId, bytes8[] memory content, OrderInput calldata input, bytes32 engineDigest)
        private
        view
        returns (bytes8[] memory picked, bytes8 chosen)
    {
        bytes8[] memory computes = _computes(s, input, engineDigest);
        Candidates memory found = Candidates(new bytes8[](s.machineIds.length), new bytes8[](s.machineIds.length), 0);
        Refused[] memory refusals = new Refused[](s.machineIds.length);
        uint256 refused;
        for (uint256 i = 0; i < s.machineIds.length; i++) {
            (bool eligible, bytes8 offerId, Refusal reason) = _judge(s, s.machines[s.machineIds[i]], content, computes);
            if (eligible) {
                found.machineIds[found.count] = s.machineIds[i];
                found.offerIds[found.count++] = offerId;
            } else {
                refusals[refused++] = Refused(reason, offerId);
            }
        }
        _sortById(found);
        picked = _draw(blockhash(block.number - 1), orderId, found, input.replicas);
        if (picked.length < input.replicas) {
            assembly {
                mstore(refusals, refused)
            }
            revert NoEligibleMachine(picked.length, input.replicas, refusals);
        }
        for (uint256 i = 0; i < found.count; i++) {
            if (found.machineIds[i] == picked[0]) chosen = found.offerIds[i];
        }
    }

    /// The compute offers that may take the order: the named one, or every active one whose terms accept it.
    function _computes(State storage s, OrderInput calldata input, bytes32 engineDigest) private view returns (bytes8[] memory found) {
        if (input.hasComputeOffer) {
            found = new bytes8[](1);
            found[0] = input.computeOffer;
            return found;
        }
        found = new bytes8[](s.offerIds.length);
        uint256 count;
        for (uint256 i = 0; i < s.offerIds.length; i++) {
            Offer storage offer = s.offers[s.offerIds[i]];
            if (offer.kind == OfferKind.Compute && offer.active && _termsAllow(offer, engineDigest, input.leaseHours)) {
                // Insertion in id order: the first covering offer in id order is the one a machine runs under.
                uint256 j = count++;
                while (j > 0 && found[j - 1] > offer.id) {
                    found[j] = found[j - 1];
                    j--;
                }
                found[j] = offer.id;
            }
        }
        assembly {
            mstore(found, count)
        }
    }

    /// The machine as a candidate (with its compute offer), or why it is not one.
    function _judge(State storage s, Machine storage machine, bytes8[] memory content, bytes8[] memory computes)
        private
        view
        returns (bool eligible, bytes8 offerId, Refusal reason)
    {
        if (!machine.active) return (false, 0, Refusal.Retired);
        uint64 last = machine.lastHeartbeat;
        if (Base.time() > last && Base.time() - last > s.params.heartbeatTimeout) return (false, 0, Refusal.Silent);
        if (s.busy[machine.id] > 0) return (false, 0, Refusal.Busy);
        if (s.accounts[machine.provider].stake < s.params.minProviderStake) return (false, 0, Refusal.LowStake);
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

    /// Pick ``count`` candidates without replacement: draw i takes sha256(seed || i) mod remaining, with
    /// seed = sha256(randomness || "or-<id hex>"); picks after the first share its compute offer.
    function _draw(bytes32 randomness, bytes8 orderId, Candidates memory found, uint256 count)
        private
        pure
        returns (bytes8[] memory picked)
    {
        bytes32 seed = sha256(abi.encodePacked(randomness, "or-", _hex(orderId)));
        picked = new bytes8[](count);
        uint256 made;
        uint256 remaining = found.count;
        bytes8 offerOfFirst;
        for (uint256 i = 0; i < count && remaining > 0; i++) {
            uint256 index = uint256(sha256(abi.encodePacked(seed, uint32(i)))) % remaining;
            picked[made++] = found.machineIds[index];
            if (i == 0) offerOfFirst = found.offerIds[index];
            uint256 kept;
            for (uint256 k = 0; k < remaining; k++) {
                if (k != index && found.offerIds[k] == offerOfFirst) {
                    (found.machineIds[kept], found.offerIds[kept]) = (found.machineIds[k], found.offerIds[k]);
                    kept++;
                }
            }
            remaining = kept;
        }
        assembly {
            mstore(picked, made)
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
